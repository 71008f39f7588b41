//! HTTP handlers, one module per area of the API. Providers' own routes are mounted from
//! their registrations (see `app::router`).

pub mod operations;
pub mod ops;
pub mod sessions;
pub mod tus;
pub mod uploads;
