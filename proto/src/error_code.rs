//! The u16 codes carried by ERROR and NODE_ERROR frames, and what each does to the connection.

/// An error code of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    BadFrame = 1,
    FrameTooLarge = 2,
    UnknownKind = 3,
    NotLoggedIn = 4,
    AuthFailed = 5,
    Overloaded = 6,
    NoBackend = 7,
    RateLimited = 8,
    Unavailable = 11,
    SlowConsumer = 9,
    Timeout = 10,
    Kicked = 12,
    Internal = 13,
    /// Refused for now, retry later; answers one request (the connection stays).
    Busy = 14,
    /// No reply within the gateway's request deadline; answers one request.
    RequestTimeout = 15,
    /// Not allowed (a room the token does not name, too many rooms); answers one request.
    Forbidden = 16,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownKind,
        ErrorCode::NotLoggedIn,
        ErrorCode::AuthFailed,
        ErrorCode::Overloaded,
        ErrorCode::NoBackend,
        ErrorCode::RateLimited,
        ErrorCode::SlowConsumer,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::Kicked,
        ErrorCode::Internal,
        ErrorCode::Busy,
        ErrorCode::RequestTimeout,
        ErrorCode::Forbidden,
    ];

    /// The code for a wire value, or `None` for a value v1 does not define.
    pub fn from_u16(value: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_u16() == value)
    }

    /// The wire value.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Whether the sender closes the connection after this error (codes 1–6, 9, 10, 12) or
    /// the error answers one request and the connection stays (7, 8, 11, 13–16).
    pub fn closes_connection(self) -> bool {
        !matches!(
            self,
            ErrorCode::NoBackend
                | ErrorCode::RateLimited
                | ErrorCode::Unavailable
                | ErrorCode::Internal
                | ErrorCode::Busy
                | ErrorCode::RequestTimeout
                | ErrorCode::Forbidden
        )
    }

    /// The name used in design.md, logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::UnknownKind => "UNKNOWN_KIND",
            ErrorCode::NotLoggedIn => "NOT_LOGGED_IN",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::NoBackend => "NO_BACKEND",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Kicked => "KICKED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Busy => "BUSY",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::Forbidden => "FORBIDDEN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_design() {
        let numbered: Vec<(u16, &str)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_u16(), c.name()))
            .collect();
        assert_eq!(
            numbered,
            vec![
                (1, "BAD_FRAME"),
                (2, "FRAME_TOO_LARGE"),
                (3, "UNKNOWN_KIND"),
                (4, "NOT_LOGGED_IN"),
                (5, "AUTH_FAILED"),
                (6, "OVERLOADED"),
                (7, "NO_BACKEND"),
                (8, "RATE_LIMITED"),
                (9, "SLOW_CONSUMER"),
                (10, "TIMEOUT"),
                (11, "UNAVAILABLE"),
                (12, "KICKED"),
                (13, "INTERNAL"),
                (14, "BUSY"),
                (15, "REQUEST_TIMEOUT"),
                (16, "FORBIDDEN"),
            ]
        );
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(17), None);
    }

    #[test]
    fn which_codes_close() {
        let closing: Vec<u16> = ErrorCode::ALL
            .iter()
            .filter(|c| c.closes_connection())
            .map(|c| c.as_u16())
            .collect();
        assert_eq!(closing, vec![1, 2, 3, 4, 5, 6, 9, 10, 12]);
    }
}
