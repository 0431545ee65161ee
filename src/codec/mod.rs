//! Byte-level parsers and encoders with no IO: HTTP/1.1 heads and framing, JSON inspection.
