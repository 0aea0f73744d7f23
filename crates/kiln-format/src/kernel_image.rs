//! The plain kernel inside a compressed kernel image, for `kiln build --decompress-kernel`
//! (LinuxKit's flag; loaders such as Firecracker want an uncompressed kernel): a gzip file
//! (arm64's `Image.gz`), or an x86 bzImage whose payload is gzip, xz (Debian's kernels) or
//! zstd compressed. LinuxKit reads gzip payloads only.

use std::io::Read;

/// The largest kernel kiln decompresses to: a bound on what a hostile image can make it write.
const MAX_KERNEL: u64 = 512 << 20;

const GZIP: &[u8] = b"\x1f\x8b";
const XZ: &[u8] = b"\xfd7zXZ\x00";
const ZSTD: &[u8] = b"\x28\xb5\x2f\xfd";

/// Decompress `image`; an error says what kind of image it is not.
pub fn decompress_kernel(image: &[u8]) -> Result<Vec<u8>, String> {
    if image.starts_with(GZIP) {
        return inflate(image);
    }
    let payload = bzimage_payload(image)?;
    inflate(payload)
}

/// The compressed payload of an x86 bzImage (boot protocol 2.08 or later).
fn bzimage_payload(image: &[u8]) -> Result<&[u8], String> {
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let is_bzimage =
        image.get(0x1fe..0x200) == Some(&[0x55, 0xaa]) && image.get(0x202..0x206) == Some(b"HdrS");
    if !is_bzimage {
        return Err("neither a gzip-compressed kernel nor an x86 bzImage".into());
    }
    let version = image
        .get(0x206..0x208)
        .map(|v| u16::from_le_bytes([v[0], v[1]]));
    if version.is_none_or(|v| v < 0x0208) {
        return Err(
            "a bzImage older than boot protocol 2.08, which does not locate its payload".into(),
        );
    }
    let setup_sectors = usize::from(image[0x1f1]);
    let (Some(offset), Some(length)) = (u32_at(0x248), u32_at(0x24c)) else {
        return Err("a truncated bzImage header".into());
    };
    let start = offset + (setup_sectors + 1) * 512;
    image
        .get(start..start.saturating_add(length))
        .ok_or_else(|| "a bzImage whose payload runs past its end".into())
}

/// Decompress a gzip, xz or zstd stream, at most [`MAX_KERNEL`] bytes of it.
fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let reader: Box<dyn Read + '_> = if data.starts_with(GZIP) {
        Box::new(flate2::read::MultiGzDecoder::new(data))
    } else if data.starts_with(XZ) {
        Box::new(liblzma::read::XzDecoder::new(data))
    } else if data.starts_with(ZSTD) {
        Box::new(zstd::stream::read::Decoder::new(data).map_err(|e| e.to_string())?)
    } else {
        return Err(format!(
            "a payload kiln cannot decompress (it starts {:02x?}; gzip, xz and zstd are known)",
            &data[..data.len().min(4)]
        ));
    };
    let mut out = Vec::new();
    reader
        .take(MAX_KERNEL + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("decompressing: {e}"))?;
    if out.len() as u64 > MAX_KERNEL {
        return Err(format!("it decompresses to more than {MAX_KERNEL} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    /// A bzImage with one setup sector whose payload is `payload`.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 1024];
        img[0x1f1] = 1;
        img[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        img[0x24c..0x250]
            .copy_from_slice(&u32::try_from(payload.len()).expect("small").to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    #[test]
    fn gzip_xz_and_zstd_kernels() {
        let kernel = b"\x7fELF a kernel".repeat(100);
        assert_eq!(decompress_kernel(&gzip(&kernel)).expect("gzip"), kernel);
        assert_eq!(
            decompress_kernel(&bzimage(&gzip(&kernel))).expect("ok"),
            kernel
        );
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&kernel[..], 1)
            .read_to_end(&mut xz)
            .expect("ok");
        assert_eq!(decompress_kernel(&bzimage(&xz)).expect("ok"), kernel);
        let zst = zstd::encode_all(&kernel[..], 1).expect("ok");
        assert_eq!(decompress_kernel(&bzimage(&zst)).expect("ok"), kernel);
    }

    #[test]
    fn other_images_are_errors() {
        assert!(
            decompress_kernel(b"plain")
                .expect_err("refused")
                .contains("neither")
        );
        assert!(
            decompress_kernel(&bzimage(b"LZ4!...."))
                .expect_err("refused")
                .contains("cannot decompress")
        );
        let mut cut = bzimage(&gzip(b"k"));
        cut.truncate(1030);
        assert!(
            decompress_kernel(&cut)
                .expect_err("refused")
                .contains("past its end")
        );
    }
}
