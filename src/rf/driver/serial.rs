//! A KISS TNC on a serial line (`kiss-serial:///dev/ttyUSB0?baud=9600`):
//! the tty opened non-blocking, in raw mode (no echo, no line editing, no
//! CR/LF translation, 8N1, no flow control) at the configured speed, and
//! driven by tokio's reactor ([`tokio::io::unix::AsyncFd`]), so no thread
//! blocks on it and stopping never waits for a read.
//!
//! A device that goes away (a USB TNC unplugged, the far end of a pty
//! closed) makes reads fail (`EIO`) or end; the driver then reopens the
//! path with its backoff until the device is back.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::sys::termios::{self, BaudRate, ControlFlags, SetArg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The termios speed for a line speed of [`crate::rf::tnc::SERIAL_BAUDS`].
fn baud_rate(baud: u32) -> io::Result<BaudRate> {
    Ok(match baud {
        1200 => BaudRate::B1200,
        2400 => BaudRate::B2400,
        4800 => BaudRate::B4800,
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115200 => BaudRate::B115200,
        230400 => BaudRate::B230400,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsupported speed {other}"),
            ));
        }
    })
}

/// An open serial TNC.
#[derive(Debug)]
pub struct SerialPort {
    fd: AsyncFd<OwnedFd>,
}

impl SerialPort {
    /// Opens `path` non-blocking (and not as the controlling terminal), in
    /// raw mode at `baud`. Must run inside a tokio runtime.
    pub fn open(path: &Path, baud: u32) -> io::Result<SerialPort> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
            .open(path)?;
        let mut t = termios::tcgetattr(&file).map_err(io::Error::from)?;
        termios::cfmakeraw(&mut t);
        termios::cfsetspeed(&mut t, baud_rate(baud)?).map_err(io::Error::from)?;
        // receiver on, modem lines ignored, no hardware flow control: KISS
        // TNCs use none, and a missing DCD must not block the port
        t.control_flags |= ControlFlags::CREAD | ControlFlags::CLOCAL;
        t.control_flags &= !ControlFlags::CRTSCTS;
        termios::tcsetattr(&file, SetArg::TCSANOW, &t).map_err(io::Error::from)?;
        // drop whatever the line collected while nobody listened
        if let Err(e) = termios::tcflush(&file, termios::FlushArg::TCIFLUSH) {
            tracing::debug!(error = %e, "tcflush");
        }
        Ok(SerialPort {
            fd: super::sys::register(OwnedFd::from(file))?,
        })
    }
}

impl AsyncRead for SerialPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|f| nix::unistd::read(f.get_ref(), unfilled).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for SerialPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|f| nix::unistd::write(f.get_ref(), data).map_err(io::Error::from)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // writes go straight to the tty's queue
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both ends of a pty: the slave opened as a TNC port, the master as
    /// the TNC.
    #[tokio::test]
    async fn a_pty_carries_bytes_both_ways_and_reports_its_end() {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let name = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&pty.slave)
        ))
        .unwrap();
        let mut port = SerialPort::open(&name, 9600).unwrap();
        drop(pty.slave);
        let mut master = File::from(pty.master);
        port.write_all(b"\xc0\x00abc\xc0").await.unwrap();
        let mut got = [0u8; 6];
        master.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\xc0\x00abc\xc0", "raw mode: bytes unchanged");
        master.write_all(b"\xc0\x00\x0d\x0a\xc0").unwrap();
        let mut back = [0u8; 5];
        port.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"\xc0\x00\x0d\x0a\xc0", "no CR/LF translation");
        drop(master);
        let mut rest = [0u8; 8];
        let end = port.read(&mut rest).await;
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    }
}
