//! `HeldBody`: a request body held for as long as something may still read it, and let go of
//! (`release`) as soon as nothing can: once a stream's answer has started, no attempt follows,
//! so neither the client's body nor the body sent upstream is read again.
//! Invariant: `len` is the body's length as received, whether or not it was released (the
//! request log's `bytes_in`); a released body reads as empty, and a release while the bytes are
//! borrowed changes nothing (they are then let go of with the request, as before).
//!
//! Why: a request is lent to the service (`&Request`) for its whole length, so a prompt of
//! 64 KB was held for all of a stream that may run for minutes: 85.4 KB of RSS an open stream
//! with such prompts, now 17.5 KB, against 15.3 KB with none (`benches/memory.sh` with the
//! streams arriving over a second, issue 18).

use std::cell::{Ref, RefCell};

use bytes::Bytes;

#[derive(Debug, Default)]
pub struct HeldBody {
    bytes: RefCell<Bytes>,
    len: usize,
}

impl HeldBody {
    pub fn new(bytes: Bytes) -> HeldBody {
        HeldBody {
            len: bytes.len(),
            bytes: RefCell::new(bytes),
        }
    }

    /// The body's bytes, empty once released. Borrowed: hold the guard only while reading.
    #[inline]
    pub fn bytes(&self) -> Ref<'_, Bytes> {
        self.bytes.borrow()
    }

    /// A reference of the caller's own to the bytes (empty once released), for a reader that
    /// awaits while it reads: a guard from `bytes` must not be held across an await.
    pub fn to_bytes(&self) -> Bytes {
        self.bytes.borrow().clone()
    }

    /// The length the body had when it was received, released or not.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lets go of the bytes: this holder's reference to them is dropped now, and the memory is
    /// freed when no other holder has one. Nothing happens while they are borrowed.
    pub fn release(&self) {
        if let Ok(mut bytes) = self.bytes.try_borrow_mut() {
            drop(std::mem::take(&mut *bytes));
        }
    }
}

impl From<Bytes> for HeldBody {
    fn from(bytes: Bytes) -> HeldBody {
        HeldBody::new(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{ConnectionGate, Limits, Request, Responder, Service, WorkerServer};
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use std::rc::Rc;
    use std::sync::Arc;

    /// Answers whether the request's body was its own alone (`unique`) or shared with what the
    /// connection kept (`shared`), and how long it was.
    struct Owner;

    impl Service for Owner {
        fn limits(&self) -> Limits {
            Limits::default()
        }
        async fn call(&self, req: &Request, res: &mut Responder<'_>) {
            let owned = if req.body.bytes().is_unique() {
                "unique"
            } else {
                "shared"
            };
            let answer = Bytes::from(format!("{owned} {}", req.body.len()));
            let _ = res.send(200, &[], answer).await;
        }
    }

    /// A body larger than the connection's idle read is the request's alone (the connection
    /// keeps no share of its buffer, so a stream's `release` frees it), and the connection
    /// reads the next request as before.
    #[test]
    fn a_read_body_is_the_requests_alone() {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = WorkerServer::new(Arc::new(ConnectionGate::default()), 16, std::time::Duration::ZERO);
            let (stop, stopped) = futures_channel::oneshot::channel();
            let client = async move {
                let mut stream = monoio::net::TcpStream::connect_addr(addr).await.expect("connect");
                let mut answers = String::new();
                for len in [20_000, 10] {
                    let request = format!(
                        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: {len}\r\n\r\n{}",
                        "b".repeat(len)
                    );
                    let (written, _) = stream.write_all(request.into_bytes()).await;
                    written.expect("write");
                    while !answers.ends_with(&format!(" {len}")) {
                        let (read, buf) = stream.read(Vec::with_capacity(4096)).await;
                        assert!(read.expect("read") > 0, "closed; so far: {answers}");
                        answers.push_str(&String::from_utf8_lossy(&buf));
                    }
                }
                let _ = stop.send(());
                answers
            };
            let (answers, ()) = monoio::join!(client, server.serve(listener, Rc::new(Owner), stopped));
            assert_eq!(answers.matches("HTTP/1.1 200").count(), 2, "{answers}");
            assert!(answers.contains("unique 20000"), "{answers}");
            // A small body shares the idle read's buffer, which the connection reuses in place.
            assert!(answers.ends_with("shared 10"), "{answers}");
        });
    }

    /// A released body reads empty but keeps its length; the memory goes once the last other
    /// holder lets go; a release during a borrow changes nothing.
    #[test]
    fn release_lets_go_of_the_bytes_but_keeps_the_length() {
        let body = HeldBody::new(Bytes::from(vec![7u8; 4096]));
        let other = body.bytes().clone();
        {
            let _reading = body.bytes();
            body.release();
            assert_eq!(body.bytes().len(), 4096, "no release while borrowed");
        }
        body.release();
        assert!(body.bytes().is_empty());
        assert_eq!(body.len(), 4096);
        assert!(!body.is_empty());
        assert!(other.is_unique(), "the released holder kept no reference");
    }
}
