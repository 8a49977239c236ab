//! The frame splitter on any byte stream: frames come out whole or an error says why; never a
//! panic, never a frame larger than the limit. Each frame is decoded as a client and as a server
//! message too: a typed view or an error, never a panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use maschera::wire::{Backend, Frontend, frame};

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
                    let _ = Frontend::decode(&whole);
                    match Backend::decode(&whole) {
                        Ok(Backend::ErrorResponse(fields) | Backend::NoticeResponse(fields)) => {
                            let _ = fields.iter().count();
                            let _ = fields.sqlstate();
                        }
                        Ok(Backend::RowDescription(columns)) => {
                            assert_eq!(columns.iter().count(), columns.len());
                        }
                        Ok(message) => assert_eq!(message.tag(), whole[0]),
                        Err(_) => {}
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
