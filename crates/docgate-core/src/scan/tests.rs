//! The scanner on crafted documents, each fed in many block splits.

use std::io::{Cursor, Write};

use super::*;

/// Scan `data` fed in blocks of every size in a spread, and insist they agree.
fn scan(media_type: &str, data: &[u8]) -> Result<(), ScanError> {
    let mut verdicts = Vec::new();
    for size in [1usize, 2, 3, 7, 16, 17, 64, 1000, 4096, data.len().max(1)] {
        let mut s = ContentScan::for_media_type(media_type);
        let mut result = Ok(());
        for block in data.chunks(size) {
            result = s.feed(block);
            if result.is_err() {
                break;
            }
        }
        verdicts.push(result.and_then(|()| s.finish()));
    }
    let first = verdicts[0].clone();
    for (i, v) in verdicts.iter().enumerate() {
        assert_eq!(
            v.as_ref().map_err(ScanError::found),
            first.as_ref().map_err(ScanError::found),
            "split #{i} disagrees"
        );
    }
    first
}

fn found(result: Result<(), ScanError>) -> &'static str {
    match result {
        Err(e) => e.found(),
        Ok(()) => panic!("expected a refusal"),
    }
}

fn zip_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file(name, opts).expect("start");
    w.write_all(data).expect("write");
    w.finish().expect("finish").into_inner()
}

fn windows_exe() -> Vec<u8> {
    let mut exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
    exe.resize(0x3c, 0);
    exe.extend_from_slice(&0x80u32.to_le_bytes());
    exe.resize(0x80, 0);
    exe.extend_from_slice(b"PE\0\0\x64\x86\x06\0");
    exe.resize(1024, 0x90);
    exe
}

fn elf() -> Vec<u8> {
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
    elf.resize(512, 0);
    elf
}

// ---- JPEG ----

fn segment(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0xFF, code];
    v.extend_from_slice(
        &u16::try_from(payload.len() + 2)
            .expect("short")
            .to_be_bytes(),
    );
    v.extend_from_slice(payload);
    v
}

/// A structurally complete baseline JPEG; with `thumbnail`, an EXIF APP1 segment holds a
/// whole JPEG (with its own EOI) followed by more segment bytes that look like a payload.
fn jpeg(thumbnail: bool) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8];
    v.extend(segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
    if thumbnail {
        let mut exif = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
        exif.extend_from_slice(&[0xFF, 0xD8]);
        exif.extend(segment(0xDB, &[0; 65]));
        exif.extend_from_slice(&[0xFF, 0xDA, 0, 2, 0x12, 0x34, 0xFF, 0xD9]);
        // Maker-note bytes after the thumbnail's EOI: a "first FF D9" parser would call
        // them trailing data and see a DOS header.
        exif.extend_from_slice(b"MZ\x90\0\x03\0\0\0");
        v.extend(segment(0xE1, &exif));
    }
    v.extend(segment(0xDB, &[1; 65]));
    v.extend(segment(0xC0, &[8, 0, 16, 0, 16, 1, 1, 0x11, 0]));
    v.extend(segment(0xC4, &[0; 29]));
    v.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
    // Entropy-coded data: stuffed FF 00, a restart marker, fill bytes.
    for i in 0..2000u32 {
        v.push((i % 250) as u8);
        if i % 97 == 0 {
            v.extend_from_slice(&[0xFF, 0x00]);
        }
        if i == 1000 {
            v.extend_from_slice(&[0xFF, 0xD3]);
        }
    }
    v.extend_from_slice(&[0xFF, 0xFF, 0xD9]);
    v
}

#[test]
fn a_clean_jpeg_with_an_exif_thumbnail_passes() {
    assert_eq!(scan("image/jpeg", &jpeg(true)), Ok(()));
    assert_eq!(scan("image/jpeg", &jpeg(false)), Ok(()));
}

#[test]
fn harmless_jpeg_trailers_pass() {
    let mut padded = jpeg(true);
    padded.extend_from_slice(&[0; 4096]);
    assert_eq!(scan("image/jpeg", &padded), Ok(()));
    // A second image right after the first (MPF, as phones write gain maps).
    let mut mpf = jpeg(true);
    mpf.extend(jpeg(false));
    assert_eq!(scan("image/jpeg", &mpf), Ok(()));
    let mut maker = jpeg(false);
    maker.extend_from_slice(b"SEFH\0\0\0\x01Image_UTC_Data1700000000000SEFT");
    assert_eq!(scan("image/jpeg", &maker), Ok(()));
}

#[test]
fn a_jpeg_with_a_zip_holding_an_exe_appended_is_refused() {
    let mut polyglot = jpeg(true);
    polyglot.extend(zip_of("setup.exe", &windows_exe()));
    assert_eq!(found(scan("image/jpeg", &polyglot)), payload::ZIP);
    // Also behind padding, and behind a second image.
    let mut padded = jpeg(false);
    padded.extend_from_slice(b"\0\0\r\n");
    padded.extend(zip_of("setup.exe", &windows_exe()));
    assert_eq!(found(scan("image/jpeg", &padded)), payload::ZIP);
    let mut second = jpeg(false);
    second.extend(jpeg(false));
    second.extend_from_slice(&windows_exe());
    assert!(scan("image/jpeg", &second).is_err());
}

#[test]
fn a_payload_deeper_in_a_trailer_is_found_by_its_validated_signature() {
    let mut v = jpeg(false);
    v.extend_from_slice(b"SEFH some maker note ");
    v.extend(elf());
    match scan("image/jpeg", &v) {
        Err(ScanError::TrailingPayload { found, offset, .. }) => {
            assert_eq!(found, "an ELF executable");
            assert_eq!(offset as usize, jpeg(false).len() + 21);
        }
        other => panic!("expected a trailing ELF, got {other:?}"),
    }
}

#[test]
fn a_zip_hidden_before_the_jpeg_end_is_found_by_its_end_record() {
    let mut v = vec![0xFF, 0xD8];
    v.extend(segment(0xFE, &zip_of("a.exe", &windows_exe())));
    v.extend_from_slice(&[0xFF, 0xD9]);
    assert!(matches!(
        scan("image/jpeg", &v),
        Err(ScanError::HiddenArchive { .. })
    ));
}

// ---- PNG ----

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(data.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(kind);
    v.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    v.extend_from_slice(&crc.finalize().to_be_bytes());
    v
}

fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend(png_chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]));
    // Image data that contains the bytes "IEND" and an ELF magic: only the chunk chain counts.
    v.extend(png_chunk(
        b"IDAT",
        b"x\x9cIEND\x7fELF\x02\x01\x01\0 not really",
    ));
    v.extend(png_chunk(b"IEND", &[]));
    v
}

#[test]
fn a_png_with_an_elf_appended_is_refused_and_a_clean_one_passes() {
    assert_eq!(scan("image/png", &png()), Ok(()));
    let mut v = png();
    v.extend(elf());
    assert_eq!(found(scan("image/png", &v)), "an ELF executable");
    let mut html = png();
    html.extend_from_slice(b"\n<html><script>alert(1)</script></html>");
    assert_eq!(found(scan("image/png", &html)), "HTML or script");
}

#[test]
fn the_shared_fixtures_pass() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/sila");
    for (name, media_type) in [("red1x1.png", "image/png"), ("tiny.pdf", "application/pdf")] {
        let Ok(data) = std::fs::read(fixtures.join(name)) else {
            panic!("fixture {name} missing under {}", fixtures.display());
        };
        assert_eq!(scan(media_type, &data), Ok(()), "{name}");
    }
}

// ---- PDF ----

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).expect("deflate");
    z.finish().expect("deflate")
}

fn stream_object(number: u32, dict: &str, data: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "{number} 0 obj\n<< {dict} /Length {} >>\nstream\r\n",
        data.len()
    )
    .into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\nendstream\nendobj\n");
    v
}

/// A PDF whose body is `objects`, closed by an xref section and `%%EOF`.
fn pdf(objects: &[u8]) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    v.extend_from_slice(
        b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R /OpenAction [3 0 R /Fit] >>\nendobj\n",
    );
    v.extend_from_slice(b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n");
    v.extend_from_slice(b"3 0 obj << /Type /Page /Parent 2 0 R /Contents 4 0 R >> endobj\n");
    v.extend_from_slice(objects);
    v.extend_from_slice(
        b"xref\n0 1\n0000000000 65535 f \ntrailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n9\n%%EOF\n",
    );
    v
}

/// Binary page content, with bytes that spell `/JS` and `%%EO` inside the stream data.
fn binary_content() -> Vec<u8> {
    let mut data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
    data.extend_from_slice(b" /JS (x) /F1 12 Tf %%EO ");
    data.extend((0..3000u32).map(|i| (i * 7 % 253) as u8));
    data
}

fn clean_pdf() -> Vec<u8> {
    let mut objects = stream_object(
        4,
        "/Filter /FlateDecode",
        &deflate(b"q 1 0 0 1 0 0 cm BT /F1 12 Tf (Hello) Tj ET Q"),
    );
    objects.extend(stream_object(
        5,
        "/Type /XObject /Subtype /Image /Filter /DCTDecode",
        &binary_content(),
    ));
    // A stream whose length is an indirect reference: its end is found by `endstream`.
    objects.extend_from_slice(b"6 0 obj << /Length 7 0 R >>\nstream\n");
    objects.extend(binary_content());
    objects.extend_from_slice(b"\nendstream\nendobj\n7 0 obj 8024 endobj\n");
    pdf(&objects)
}

#[test]
fn a_clean_pdf_with_binary_streams_passes() {
    assert_eq!(scan("application/pdf", &clean_pdf()), Ok(()));
}

#[test]
fn a_clean_pdf_with_incremental_updates_passes() {
    let mut v = clean_pdf();
    for rotate in [90, 180] {
        v.extend_from_slice(
            format!(
                "3 0 obj << /Type /Page /Parent 2 0 R /Contents 4 0 R /Rotate {rotate} >> endobj\n\
                 xref\n3 1\n0000000200 00000 n \ntrailer\n<< /Size 8 /Root 1 0 R /Prev 9 >>\n\
                 startxref\n400\n%%EOF\r\n"
            )
            .as_bytes(),
        );
    }
    assert_eq!(scan("application/pdf", &v), Ok(()));
}

#[test]
fn a_pdf_followed_by_whitespace_passes() {
    let mut v = clean_pdf();
    v.extend_from_slice(b"\r\n\n  \t\0\0\0\n");
    assert_eq!(scan("application/pdf", &v), Ok(()));
}

#[test]
fn a_pdf_with_a_zip_holding_an_elf_appended_is_refused() {
    let mut v = clean_pdf();
    v.extend(zip_of("run", &elf()));
    assert_eq!(found(scan("application/pdf", &v)), payload::ZIP);
    // Behind text that looks like an update, the local header is still found.
    let mut disguised = clean_pdf();
    disguised.extend_from_slice(b"9 0 obj (padding) endobj\n");
    disguised.extend(zip_of("run", &elf()));
    disguised.extend_from_slice(b"\n%%EOF\n");
    assert_eq!(found(scan("application/pdf", &disguised)), payload::ZIP);
}

#[test]
fn a_pdf_with_an_executable_right_after_eof_is_refused() {
    let mut v = clean_pdf();
    v.extend_from_slice(&elf());
    assert_eq!(found(scan("application/pdf", &v)), "an ELF executable");
    let mut script = clean_pdf();
    script.extend_from_slice(b"#!/bin/sh\nrm -rf ~\n");
    assert_eq!(found(scan("application/pdf", &script)), "a script (#!)");
}

fn javascript_pdf(action: &[u8]) -> Vec<u8> {
    let mut objects = b"8 0 obj\n<< /Type /Action ".to_vec();
    objects.extend_from_slice(action);
    objects.extend_from_slice(b" >>\nendobj\n");
    pdf(&objects)
}

#[test]
fn pdf_javascript_is_refused_wherever_the_blocks_split_it() {
    let v = javascript_pdf(b"/S /JavaScript /JS (app.alert\\(1\\))");
    let name_at = v
        .windows(11)
        .position(|w| w == b"/JavaScript")
        .expect("name");
    for split in name_at..=name_at + 11 {
        let mut s = ContentScan::for_media_type("application/pdf");
        let verdict = s
            .feed(&v[..split])
            .and_then(|()| s.feed(&v[split..]))
            .and_then(|()| s.finish());
        assert_eq!(
            verdict,
            Err(ScanError::ActiveContent {
                found: "JavaScript",
                offset: name_at as u64
            }),
            "split at {split}"
        );
    }
}

#[test]
fn hex_escaped_and_short_names_are_refused_too() {
    for action in [
        &b"/S /J#61vaScript /JS (x)"[..],
        b"/S#20 /#4A#61#76#61#53#63#72#69#70#74",
        b"/JS 12 0 R",
        b"/S /Launch /F (cmd.exe)",
        b"/S /L#61unch",
    ] {
        assert!(
            scan("application/pdf", &javascript_pdf(action)).is_err(),
            "{}",
            String::from_utf8_lossy(action)
        );
    }
    assert_eq!(
        scan(
            "application/pdf",
            &javascript_pdf(b"/S /URI /URI (https://example.org)")
        ),
        Ok(())
    );
}

#[test]
fn javascript_inside_a_compressed_object_stream_is_refused() {
    let objects = b"8 0 9 40 << /S /JavaScript /JS 9 0 R >> (app.alert\\(1\\))";
    let v = pdf(&stream_object(
        10,
        "/Type /ObjStm /N 2 /First 9 /Filter /FlateDecode",
        &deflate(objects),
    ));
    assert_eq!(found(scan("application/pdf", &v)), "JavaScript");
    let clean = pdf(&stream_object(
        10,
        "/Type /ObjStm /N 1 /First 4 /Filter /FlateDecode",
        &deflate(b"8 0 << /Type /Font >>"),
    ));
    assert_eq!(scan("application/pdf", &clean), Ok(()));
    let lzw = pdf(&stream_object(
        10,
        "/Type /ObjStm /N 1 /First 4 /Filter /LZWDecode",
        b"\x80\x0b\x60\x50",
    ));
    assert!(matches!(
        scan("application/pdf", &lzw),
        Err(ScanError::Uncheckable { .. })
    ));
}

#[test]
fn an_embedded_executable_is_refused_and_an_embedded_xml_invoice_passes() {
    let exe = pdf(&stream_object(
        11,
        "/Type /EmbeddedFile /Filter /FlateDecode",
        &deflate(&windows_exe()),
    ));
    assert_eq!(found(scan("application/pdf", &exe)), "a Windows executable");
    // Without /Type (it is optional), the PE header still gives it away.
    let untyped = pdf(&stream_object(
        11,
        "/Filter /FlateDecode",
        &deflate(&windows_exe()),
    ));
    assert_eq!(
        found(scan("application/pdf", &untyped)),
        "a Windows executable"
    );
    let raw_elf = pdf(&stream_object(11, "/Type /EmbeddedFile", &elf()));
    assert_eq!(
        found(scan("application/pdf", &raw_elf)),
        "an ELF executable"
    );
    let xml = pdf(&stream_object(
        11,
        "/Type /EmbeddedFile /Subtype /text#2Fxml /Filter /FlateDecode",
        &deflate(b"<?xml version=\"1.0\"?><rsm:CrossIndustryInvoice/>"),
    ));
    assert_eq!(scan("application/pdf", &xml), Ok(()));
}

// ---- other formats ----

#[test]
fn a_zip_ending_a_gif_is_refused_and_a_plain_gif_passes() {
    let mut gif = b"GIF89a\x01\0\x01\0\0\0\0,\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;".to_vec();
    assert_eq!(scan("image/gif", &gif), Ok(()));
    gif.extend(zip_of("a.exe", &windows_exe()));
    // Its first local header is found before its end record is.
    assert_eq!(found(scan("image/gif", &gif)), "a ZIP archive");
}

#[test]
fn a_scanner_that_failed_keeps_its_error_and_an_inert_one_accepts_all() {
    let mut v = png();
    v.extend(elf());
    let mut s = ContentScan::for_media_type("image/png");
    let first = s.feed(&v).expect_err("elf");
    assert_eq!(s.feed(b"more").expect_err("sticky"), first);
    assert_eq!(s.finish(), Err(first));
    let mut off = ContentScan::off();
    assert!(!off.is_active());
    assert_eq!(off.feed(&v), Ok(()));
    assert_eq!(off.finish(), Ok(()));
}

#[test]
fn an_object_stream_bomb_is_refused_as_uncheckable() {
    // 80 MiB of spaces deflate to ~80 KiB: far beyond 64 MiB + 8 × the document.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..80 {
        z.write_all(&[b' '; 1 << 20]).expect("deflate");
    }
    let bomb = z.finish().expect("deflate");
    let v = pdf(&stream_object(
        10,
        "/Type /ObjStm /N 1 /First 0 /Filter /FlateDecode",
        &bomb,
    ));
    let mut s = ContentScan::for_media_type("application/pdf");
    let verdict = s.feed(&v).and_then(|()| s.finish());
    assert!(
        matches!(verdict, Err(ScanError::Uncheckable { .. })),
        "{verdict:?}"
    );
    assert!(inflate_budget(v.len() as u64) < 80 << 20);
}

/// `zip` with its end record's entry counts made to disagree (0 on this disk, 1 in all):
/// Python's `zipfile` and `unzip` still open it.
fn with_unequal_counts(mut zip: Vec<u8>) -> Vec<u8> {
    let eocd = zip.len() - 22;
    assert_eq!(&zip[eocd..eocd + 4], b"PK\x05\x06");
    zip[eocd + 8..eocd + 10].copy_from_slice(&0u16.to_le_bytes());
    zip
}

#[test]
fn regression_a_hidden_zip_whose_end_record_counts_disagree_is_still_found() {
    let hidden = with_unequal_counts(zip_of("evil.sh", b"#!/bin/sh\necho hi\n"));
    let mut in_jpeg = vec![0xFF, 0xD8];
    in_jpeg.extend(segment(0xFE, &hidden));
    in_jpeg.extend_from_slice(&[0xFF, 0xD9]);
    assert!(matches!(
        scan("image/jpeg", &in_jpeg),
        Err(ScanError::HiddenArchive { .. })
    ));
    let mut in_png = png();
    let end = in_png.len() - 12;
    in_png.splice(end..end, png_chunk(b"zzZz", &hidden));
    assert!(matches!(
        scan("image/png", &in_png),
        Err(ScanError::HiddenArchive { .. })
    ));
}

#[test]
fn an_end_record_signature_alone_near_the_end_is_not_an_archive() {
    // The four bytes by chance (no directory before them, odd counts): not refused.
    let mut v = vec![0xFF, 0xD8];
    v.extend(segment(
        0xFE,
        b"PK\x05\x06\x01\0\x02\0\x03\0\x04\0 by chance",
    ));
    v.extend_from_slice(&[0xFF, 0xD9]);
    assert_eq!(scan("image/jpeg", &v), Ok(()));
}

#[test]
fn regression_an_archive_or_executable_after_a_gif_or_webp_is_refused() {
    let gif = b"GIF89a\x01\0\x01\0\0\0\0,\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;".to_vec();
    let mut webp =
        b"RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0\x2f\0\0\0\x10\x07\x10\x11\x11\x88\x88\xfe\x07\0"
            .to_vec();
    assert_eq!(scan("image/webp", &webp), Ok(()));
    let rar =
        b"Rar!\x1a\x07\x01\0\x33\x92\xb5\xe5\x0a\x01\x05\x06\0\x05\x01\x01\x80\x80\0".to_vec();
    for (media_type, image) in [
        ("image/gif", gif),
        ("image/webp", std::mem::take(&mut webp)),
    ] {
        for payload in [rar.clone(), elf(), b"<script>alert(1)</script>".to_vec()] {
            let mut v = image.clone();
            v.extend_from_slice(&payload);
            match scan(media_type, &v) {
                Err(ScanError::CarriedPayload { offset, .. }) => {
                    assert_eq!(offset as usize, image.len(), "{media_type}")
                }
                other => panic!("{media_type}: expected a carried payload, got {other:?}"),
            }
        }
    }
}
