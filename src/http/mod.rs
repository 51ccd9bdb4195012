//! HTTP/1.1: the request-head parser, the chunked body decoder, the response-head writer and the
//! one mapping from protocol errors to responses. No Python here.

pub mod buffer;
pub mod chunked;
pub mod error;
pub mod parse;
pub mod response;
pub mod target;

pub use buffer::ReadBuf;
pub use chunked::ChunkedDecoder;
pub use error::HttpError;
pub use parse::{Framing, Limits, RequestHead, Version};
