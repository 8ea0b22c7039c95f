//! Durable orchestrated sagas (seed 001 case 2).

#![deny(missing_docs)]

pub mod decision;
pub mod record;
