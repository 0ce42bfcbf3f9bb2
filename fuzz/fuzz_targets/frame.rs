//! Fuzzes the native-protocol frame decoder and in-place validation: any
//! byte stream must yield frames or typed errors, never a panic, and never
//! an allocation beyond the configured frame limit.
#![no_main]

use corekv_wire::{FrameDecoder, Request, Response, WireLimits, validate_request_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, stream)) = data.split_first() else {
        return;
    };
    // Low bits pick a small or the default frame limit, high bits the feed
    // size, so partial-frame paths are exercised too.
    let limits = if knobs & 1 == 0 {
        WireLimits::default()
    } else {
        WireLimits {
            max_frame_bytes: 256,
            max_request_bytes: 200,
            ..WireLimits::default()
        }
    };
    let feed = 1 + (knobs >> 1) as usize * 7;
    let mut decoder = FrameDecoder::with_read_chunk(&limits, 64);
    for chunk in stream.chunks(feed) {
        let spare = decoder.buf_mut();
        let n = chunk.len().min(spare.len());
        spare[..n].copy_from_slice(&chunk[..n]);
        decoder.advance(n);
        if n < chunk.len() {
            decoder.extend(&chunk[n..]);
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.payload().len() + 16 <= limits.max_frame_bytes);
                    if let Ok(req) = validate_request_frame(&frame, &limits) {
                        let _ = req.to_owned_request();
                    }
                    if let Ok(resp) = frame.access::<Response>() {
                        let _ = resp.to_owned_response();
                    }
                    let _ = frame.access::<Request>();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});
