//! Protocol errors and the single function that turns one into a response.

/// Why a request was rejected. Each maps to exactly one status in [`HttpError::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Malformed syntax or a forbidden combination (RFC 9112).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request line alone is longer than `--buffer-size`.
    #[error("request line longer than --buffer-size {0} bytes")]
    UriTooLong(usize),
    /// The head is longer than `--buffer-size`, or has too many headers.
    #[error("request head larger than --buffer-size {0} bytes")]
    HeadTooLarge(usize),
    /// More header lines than [`crate::http::parse::MAX_HEADERS`].
    #[error("more than {0} request headers")]
    TooManyHeaders(usize),
    /// The body is longer than `--limit-post`.
    #[error("request body larger than --limit-post {0} bytes")]
    BodyTooLarge(u64),
    /// An HTTP version other than 1.0 and 1.1.
    #[error("unsupported HTTP version")]
    Version,
    /// A transfer coding other than a final `chunked`.
    #[error("unsupported transfer-encoding")]
    NotImplemented,
    /// The head did not arrive within `--socket-timeout`.
    #[error("request head not received within --socket-timeout")]
    Timeout,
}

impl HttpError {
    /// The response status for this error.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Timeout => 408,
            Self::BodyTooLarge(_) => 413,
            Self::UriTooLong(_) => 414,
            Self::HeadTooLarge(_) | Self::TooManyHeaders(_) => 431,
            Self::NotImplemented => 501,
            Self::Version => 505,
        }
    }

    /// The complete response: status, a short text body, and `Connection: close` (a rejected
    /// request always ends its connection, since what follows it cannot be trusted).
    #[must_use]
    pub fn response(&self) -> Vec<u8> {
        let status = self.status();
        let text = format!("{status} {}\n", super::response::reason(status));
        super::response::plain(status, b"HTTP/1.1", "", &text, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status() {
        let cases = [
            (HttpError::BadRequest("x"), 400),
            (HttpError::Timeout, 408),
            (HttpError::BodyTooLarge(1), 413),
            (HttpError::UriTooLong(1), 414),
            (HttpError::HeadTooLarge(1), 431),
            (HttpError::TooManyHeaders(1), 431),
            (HttpError::NotImplemented, 501),
            (HttpError::Version, 505),
        ];
        for (e, s) in cases {
            assert_eq!(e.status(), s);
            let r = e.response();
            let text = String::from_utf8(r).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {s} ")), "{text}");
            assert!(text.contains("Connection: close\r\n"));
            assert!(text.ends_with(&format!(
                "\r\n\r\n{s} {}\n",
                super::super::response::reason(s)
            )));
        }
    }
}
