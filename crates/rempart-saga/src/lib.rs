//! Durable orchestrated sagas (being built; see issue 11).
