//! The rules for names and addresses that Discovery enforces and peers
//! check before they register, so both agree and say the same thing.

/// Longest name, in characters: long enough for `firstname.lastname@host`,
/// short enough to print in one column.
pub const MAX_NAME_CHARS: usize = 64;

/// Longest address accepted, in bytes: a DNS name is at most 253 bytes, plus
/// brackets, a colon and a port.
pub const MAX_ADDRESS_LEN: usize = 262;

/// A name is 1 to 64 characters, none of them a control character or white
/// space. The error completes "name ...".
pub fn name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err("must be at most 64 characters");
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must be printable, without spaces or control characters");
    }
    Ok(())
}

/// An address is `host:port`: a port 1-65535 and a host that is an IPv4
/// address, a bracketed IPv6 address or a DNS name. The error completes
/// "address ...".
pub fn address(address: &str) -> Result<(), &'static str> {
    const RULE: &str = "must be host:port, e.g. 127.0.0.1:50061";
    if address.len() > MAX_ADDRESS_LEN {
        return Err("is too long");
    }
    let (host, port) = address.rsplit_once(':').ok_or(RULE)?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 && !port.starts_with('+') => {}
        _ => return Err("must end in a port from 1 to 65535"),
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host)
    };
    if host_ok { Ok(()) } else { Err(RULE) }
}

/// Letters, digits, hyphens and dots, with no empty label: what a resolver accepts.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}
