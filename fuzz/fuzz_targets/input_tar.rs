//! The tar reader behind `kiln build --input-tar`: whatever the bytes, entries come back or an
//! error does, never a panic, and no entry claims more data than the reader then yields.
#![no_main]
use std::io::Read;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut reader = kiln_format::TarReader::new(data);
    for _ in 0..10_000 {
        match reader.next_entry() {
            Ok(Some(e)) => {
                let mut buf = Vec::new();
                let read = reader.data().read_to_end(&mut buf);
                if let Ok(n) = read {
                    assert!(n as u64 <= e.entry.size, "more data than the header says");
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
});
