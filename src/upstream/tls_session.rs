//! `Session`: one turn at a time of rustls's unbuffered client connection over ciphertext
//! someone else holds (`tls_stream`): a record decrypted into the caller's room, a handshake
//! message or alert encoded, application data sealed, or the finding that more ciphertext is
//! needed. It does no IO.
//! Invariant: what a turn produces that nobody took yet is here (`plaintext`, `outgoing`) and
//! in order; a record's plaintext goes to the room only while nothing of an earlier one is
//! kept aside.

use std::io;
use std::mem::MaybeUninit;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError, UnbufferedStatus, WriteTraffic,
};

/// What a record adds to its plaintext (header, content type, tag), with room to spare; a
/// record that needs more is encrypted again into a buffer of the size rustls asks for.
const RECORD_OVERHEAD_BYTES: usize = 64;

/// The rustls session and what it produced that is not yet taken.
pub(super) struct Session {
    pub(super) tls: UnbufferedClientConnection,
    /// Decrypted bytes the caller has not taken yet, from `taken` on.
    pub(super) plaintext: Vec<u8>,
    taken: usize,
    /// Records encoded and not yet sent.
    pub(super) outgoing: Vec<u8>,
}

/// What a turn offers rustls to send once it can send application data.
#[derive(Clone, Copy)]
pub(super) enum Offer<'a> {
    Nothing,
    Plaintext(&'a [u8]),
    CloseNotify,
}

/// What one turn of the session over the unprocessed ciphertext came to.
pub(super) enum Turn {
    /// A record's plaintext: this many bytes of it went to the caller, the rest to `plaintext`.
    Plaintext(usize),
    /// A record is decrypted and waits in the session: the caller's room was too small for it
    /// and asked for whole records only.
    Decrypted,
    /// A handshake message or an alert went into `outgoing`; more may follow.
    Encoded,
    /// `outgoing` is to be sent now.
    Transmit,
    /// The offer went into `outgoing` (this many bytes of plaintext).
    Sealed(usize),
    /// Nothing more to do without more ciphertext.
    NeedsInput,
    /// The peer's `close_notify` was read.
    PeerClosed,
    /// Both sides have sent `close_notify`.
    Closed,
}

/// How a turn hands over a decrypted record.
#[derive(Clone, Copy)]
pub(super) enum Fit {
    /// What fits into the room, the rest to the session's `plaintext`.
    Part,
    /// Into the room if it fits whole; else it waits in rustls.
    Whole,
}

impl Session {
    pub(super) fn new(tls: UnbufferedClientConnection) -> Session {
        Session {
            tls,
            plaintext: Vec::new(),
            taken: 0,
            outgoing: Vec::new(),
        }
    }

    pub(super) fn has_plaintext(&self) -> bool {
        self.taken < self.plaintext.len()
    }

    /// Plaintext kept from an earlier record, as much as fits into `room`.
    pub(super) fn take_plaintext(&mut self, room: &mut [MaybeUninit<u8>]) -> usize {
        let n = copy_into(room, &self.plaintext[self.taken..]);
        self.taken += n;
        if self.taken == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.taken = 0;
        }
        n
    }

    /// Hands rustls `unprocessed` once: decrypts a record (into `room` as `fit` says),
    /// encodes a message to send, seals `offer`, or finds it needs more. With how many bytes
    /// from the front of `unprocessed` are done with, whatever the outcome.
    pub(super) fn turn(
        &mut self,
        unprocessed: &mut [u8],
        room: &mut [MaybeUninit<u8>],
        offer: Offer<'_>,
        fit: Fit,
    ) -> (usize, io::Result<Turn>) {
        // Behind plaintext kept aside, a record is kept whole too: order holds.
        let keep_whole = self.has_plaintext();
        let UnbufferedStatus { mut discard, state } = self.tls.process_tls_records(unprocessed);
        let turn = match state {
            Ok(ConnectionState::ReadTraffic(traffic))
                if matches!(fit, Fit::Whole) && traffic.peek_len().is_some_and(|n| n.get() > room.len()) =>
            {
                Ok(Turn::Decrypted)
            }
            Ok(ConnectionState::ReadTraffic(mut traffic)) => match traffic.next_record() {
                Some(Ok(record)) => {
                    discard += record.discard;
                    let copied = if keep_whole { 0 } else { copy_into(room, record.payload) };
                    self.plaintext.extend_from_slice(&record.payload[copied..]);
                    Ok(Turn::Plaintext(copied))
                }
                Some(Err(e)) => Err(invalid(e)),
                // Not expected (the state comes with a record): a turn with nothing to show.
                None => Ok(Turn::Encoded),
            },
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                encode_into(&mut encode, &mut self.outgoing).map(|()| Turn::Encoded)
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                // Marked sent before it is: the caller sends `outgoing` before it offers
                // anything more, and a failed send ends the connection.
                transmit.done();
                Ok(Turn::Transmit)
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match offer {
                Offer::Nothing => Ok(Turn::NeedsInput),
                Offer::Plaintext(bytes) => seal_into(&mut traffic, bytes, &mut self.outgoing).map(Turn::Sealed),
                Offer::CloseNotify => close_into(&mut traffic, &mut self.outgoing).map(|()| Turn::Sealed(0)),
            },
            Ok(ConnectionState::BlockedHandshake) => Ok(Turn::NeedsInput),
            Ok(ConnectionState::PeerClosed) => Ok(Turn::PeerClosed),
            Ok(ConnectionState::Closed) => Ok(Turn::Closed),
            // Early data is a server's; the enum may grow.
            Ok(_) => Err(invalid("unexpected tls state")),
            Err(e) => Err(invalid(e)),
        };
        (discard, turn)
    }
}

/// `bytes` as room to write into (every byte of it may be overwritten).
pub(super) fn as_uninit(bytes: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has `u8`'s layout, and every value written through the result
    // is an initialised byte, so `bytes` stays initialised.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<MaybeUninit<u8>>(), bytes.len())
    }
}

/// Why `append`'s writer wrote nothing.
enum Unwritten {
    /// Its bytes need this much room.
    Needs(usize),
    Failed(io::Error),
}

/// Has `write` put its bytes at the end of `out`, in room for `guess` bytes or, when that is
/// too little, for as many as it asks for.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Unwritten>,
) -> io::Result<()> {
    let start = out.len();
    out.resize(start + guess, 0);
    let written = match write(&mut out[start..]) {
        Err(Unwritten::Needs(size)) => {
            out.resize(start + size, 0);
            write(&mut out[start..])
        }
        other => other,
    };
    match written {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(Unwritten::Needs(size)) => Err(invalid(format!("tls: a record asked for {size} bytes twice"))),
        Err(Unwritten::Failed(e)) => Err(e),
    }
}

/// Encodes the handshake message or alert rustls has ready at the end of `out`.
fn encode_into(encode: &mut EncodeTlsData<'_, ClientConnectionData>, out: &mut Vec<u8>) -> io::Result<()> {
    append(out, 0, |room| {
        encode.encode(room).map_err(|e| match e {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => Unwritten::Needs(required_size),
            e => Unwritten::Failed(invalid(e)),
        })
    })
}

/// Encrypts `plaintext` at the end of `out`; its length.
fn seal_into(
    traffic: &mut WriteTraffic<'_, ClientConnectionData>,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<usize> {
    append(out, plaintext.len() + RECORD_OVERHEAD_BYTES, |room| {
        traffic.encrypt(plaintext, room).map_err(unwritten)
    })?;
    Ok(plaintext.len())
}

/// Encodes a `close_notify` alert at the end of `out`.
fn close_into(traffic: &mut WriteTraffic<'_, ClientConnectionData>, out: &mut Vec<u8>) -> io::Result<()> {
    append(out, RECORD_OVERHEAD_BYTES, |room| {
        traffic.queue_close_notify(room).map_err(unwritten)
    })
}

fn unwritten(e: EncryptError) -> Unwritten {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => Unwritten::Needs(required_size),
        e => Unwritten::Failed(invalid(e)),
    }
}

/// Copies as much of `bytes` as fits to the start of `room`; how much. (`write_copy_of_slice`
/// would do it without `unsafe` from Rust 1.93; the crate's floor is 1.87.)
fn copy_into(room: &mut [MaybeUninit<u8>], bytes: &[u8]) -> usize {
    let n = bytes.len().min(room.len());
    // SAFETY: both are valid for `n` bytes (`n` is at most either length), and `bytes` is
    // initialised; they do not overlap, `room` being borrowed mutably.
    #[allow(unsafe_code)]
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), room.as_mut_ptr().cast::<u8>(), n);
    }
    n
}

pub(super) fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
