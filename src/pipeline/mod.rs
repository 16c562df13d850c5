//! From decoded messages to durable sink writes: the change model, batching with its flush
//! policy and backpressure, and the contract every sink implements.

pub mod batcher;
pub mod change;
pub mod sink;
