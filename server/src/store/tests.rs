//! Unit tests of the store API on small configurations.

use super::*;
