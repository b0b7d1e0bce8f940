//! Image decoding of arbitrary bytes, then the resize and tiling path at small SmolVLM-like sizes;
//! the size read from the header alone (which the image token count uses) is the decoded size.
#![no_main]
use idefics3::config::{ImageProcessorConfig, ResizeTarget};
use idefics3::processor::{
    image::{decode_image, image_size},
    tiling,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = image_size(data, "fuzz");
    let Ok(img) = decode_image(data, "fuzz") else {
        return;
    };
    assert_eq!(header.ok(), Some((img.width, img.height)));
    // Tiling works on every decoded image; large ones only cost time, so keep runs short.
    if img.width * img.height > 1 << 20 {
        return;
    }
    let c = ImageProcessorConfig {
        size: ResizeTarget::LongestEdge(96),
        max_image_size: 32,
        ..Default::default()
    };
    let t = tiling::process_image(&img, &c);
    assert_eq!(tiling::grid(img.width, img.height, &c), (t.rows, t.cols));
});
