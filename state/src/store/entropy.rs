//! Where the 16-byte secret of each resume token comes from: `getrandom(2)`, read 1 KiB at a
//! time so that a login costs a system call only once in 64.

/// Secrets for resume tokens, from the kernel's CSPRNG in batches.
pub(super) struct Entropy {
    buf: [u8; 1024],
    used: usize,
}

impl Default for Entropy {
    fn default() -> Self {
        Entropy {
            buf: [0; 1024],
            used: 1024,
        }
    }
}

impl Entropy {
    pub(super) fn secret(&mut self) -> Option<[u8; 16]> {
        if self.used + 16 > self.buf.len() {
            let mut filled = 0;
            while filled < self.buf.len() {
                let rest = &mut self.buf[filled..];
                // SAFETY: the pointer and length describe `rest`, a live, writable buffer.
                let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
                if n < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return None;
                }
                filled += n as usize;
            }
            self.used = 0;
        }
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&self.buf[self.used..self.used + 16]);
        self.used += 16;
        Some(secret)
    }
}
