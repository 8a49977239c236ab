//! The frontend frame splitter on any byte stream: frames come out whole or an error says why;
//! never a panic, never a frame larger than the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use maschera::wire::frame;

const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the stream is chopped into reads, to exercise partial frames.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match frame::split_frame(&mut buf, MAX) {
                Ok(Some(whole)) => {
                    assert!(whole.len() >= frame::HEADER_LEN && whole.len() <= MAX);
                    let body = frame::body(&whole);
                    let _ = frame::error_fields(body).count();
                    let _ = frame::sqlstate(body);
                    let _ = frame::cstr(body);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
