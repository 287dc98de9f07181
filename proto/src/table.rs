//! The macro behind the opcode and status tables: an enum with explicit wire numbers, its
//! `from_*` lookup, its documented names, and a `(number, name)` table that the docs test
//! compares with `docs/protocol.md`. One definition, so the two tables cannot drift in shape.

/// Defines `$ty` (a `#[repr($repr)]` enum), `$ty::$from($repr) -> Option<$ty>`,
/// `$ty::name(self) -> &'static str`, and the const table `$table: &[($repr, &str)]`.
macro_rules! wire_table {
    (
        $(#[$ty_doc:meta])* enum $ty:ident: $repr:ty, fn $from:ident;
        $(#[$table_doc:meta])* const $table:ident;
        $( $(#[$doc:meta])* $name:ident = $num:literal, $wire:literal; )*
    ) => {
        $(#[$ty_doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $ty {
            $( $(#[$doc])* $name = $num, )*
        }

        impl $ty {
            /// The entry with this number, if it is assigned.
            pub fn $from(n: $repr) -> Option<Self> {
                match n {
                    $( $num => Some(Self::$name), )*
                    _ => None,
                }
            }

            /// The name used in the documentation (`GET`, `NOT_FOUND`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $( Self::$name => $wire, )*
                }
            }
        }

        $(#[$table_doc])*
        pub const $table: &[($repr, &str)] = &[ $( ($num, $wire), )* ];
    };
}

pub(crate) use wire_table;
