//! From decoded messages to durable sink writes: the change model, batching with its flush
//! policy and backpressure, the sink's circuit breaker, the contract every sink implements, and the text-row form in which
//! snapshot rows reach a sink's encoder.

pub mod batcher;
pub mod change;
pub mod circuit;
pub mod progress;
pub mod sink;
pub mod text_row;
