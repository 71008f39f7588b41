//! HTTP handlers, one module per area of the API.

pub mod ops;
pub mod ost;
pub mod uploads;
