//! hyper on glommio: an executor that spawns local tasks on the calling
//! shard, and hyper's IO traits over glommio's `TcpStream`.
//!
//! hyper 1's HTTP/2 server puts no `Send` bound on the executor or on the
//! futures it runs, so a connection, its streams and the request layer they
//! call all stay on the shard that accepted the connection.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs hyper's background work (HTTP/2 streams) as local tasks.
#[derive(Clone, Copy, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        glommio::spawn_local(fut).detach();
    }
}

/// A glommio TCP stream (or a TLS stream over one) as hyper IO.
pub struct Io<S>(pub S);

impl<S: futures_lite::AsyncRead + Unpin> hyper::rt::Read for Io<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the cursor's unfilled part is only written (zeroed, then
        // filled by the read) before `advance` reports the filled prefix;
        // zeroing first makes the `&mut [u8]` view of it initialised.
        let n = unsafe {
            let uninit: &mut [MaybeUninit<u8>] = buf.as_mut();
            uninit.fill(MaybeUninit::new(0));
            let bytes = &mut *(uninit as *mut [MaybeUninit<u8>] as *mut [u8]);
            match Pin::new(&mut self.0).poll_read(cx, bytes) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        };
        // SAFETY: the read initialised (wrote) the first `n` bytes.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl<S: futures_lite::AsyncWrite + Unpin> hyper::rt::Write for Io<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
