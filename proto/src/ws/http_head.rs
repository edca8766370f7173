//! Reading the header fields of an upgrade request or response, as `httparse` parsed them:
//! field names are case-insensitive, values may be comma-separated lists spread over several
//! fields, and list items are compared as case-insensitive tokens where RFC 6455 says so.

use httparse::Header;

/// More than one field of a name that must appear once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Repeated;

/// The trimmed value of the only field called `name`, `None` when there is none.
pub(super) fn single<'h>(headers: &[Header<'h>], name: &str) -> Result<Option<&'h [u8]>, Repeated> {
    let mut found = None;
    for header in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        if found.is_some() {
            return Err(Repeated);
        }
        found = Some(header.value.trim_ascii());
    }
    Ok(found)
}

/// Whether any field called `name` is present.
pub(super) fn present(headers: &[Header<'_>], name: &str) -> bool {
    headers.iter().any(|h| h.name.eq_ignore_ascii_case(name))
}

/// The items of the comma-separated lists of every field called `name`, trimmed, empty
/// items skipped.
pub(super) fn list_items<'a, 'h>(
    headers: &'a [Header<'h>],
    name: &'a str,
) -> impl Iterator<Item = &'h [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// Whether the lists of the fields called `name` hold `token`, compared case-insensitively
/// (`Connection: keep-alive, Upgrade` holds `upgrade`).
pub(super) fn has_token(headers: &[Header<'_>], name: &str, token: &str) -> bool {
    list_items(headers, name).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> Header<'a> {
        Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn single_trims_and_refuses_repeats() {
        let headers = [h("Host", " example:80 "), h("X", "1"), h("x", "2")];
        assert_eq!(single(&headers, "host"), Ok(Some(&b"example:80"[..])));
        assert_eq!(single(&headers, "origin"), Ok(None));
        assert_eq!(single(&headers, "X"), Err(Repeated));
        assert!(present(&headers, "HOST"));
    }

    #[test]
    fn tokens_are_found_in_lists_across_fields() {
        let headers = [
            h("Connection", "keep-alive, Upgrade"),
            h("Sec-WebSocket-Protocol", "chat,, superchat"),
            h("sec-websocket-protocol", "tether.v1"),
        ];
        assert!(has_token(&headers, "connection", "upgrade"));
        assert!(!has_token(&headers, "connection", "close"));
        let offered: Vec<&[u8]> = list_items(&headers, "Sec-WebSocket-Protocol").collect();
        assert_eq!(offered, [&b"chat"[..], b"superchat", b"tether.v1"]);
    }
}
