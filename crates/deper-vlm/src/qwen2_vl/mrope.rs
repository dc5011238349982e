//! Qwen2-VL's multimodal rotary positions (M-RoPE): where text and image tokens sit on the
//! `(t, h, w)` axes that the shared decoder's rotary tables read.
//!
//! Reference: transformers `models/qwen2_vl/modeling_qwen2_vl.py` (`Qwen2VLModel.get_rope_index`).

use crate::{Result, VlmError};

/// Multimodal rotary positions for one sequence (`get_rope_index`).
///
/// Text tokens (including `<|vision_start|>`, `<|vision_end|>` and persona tokens) get `(c, c, c)` from a
/// running counter. A run of `image_token_id` tokens is one image, consuming the next `grid_thw` entry:
/// with the merged grid `t × h/m × w/m` starting at counter `s`, token `(ti, r, col)` gets
/// `(s + ti, s + r, s + col)`, and the counter continues at `s + max(t, h/m, w/m)`.
///
/// Returns the positions `[3][L]` and `rope_delta = max + 1 - L`, the offset of generated tokens.
pub fn rope_index(
    input_ids: &[u32],
    image_token_id: u32,
    grid_thw: &[[usize; 3]],
    merge: usize,
) -> Result<([Vec<i64>; 3], i64)> {
    let len = input_ids.len();
    let mut pos: [Vec<i64>; 3] = [Vec::with_capacity(len), Vec::with_capacity(len), Vec::with_capacity(len)];
    let mut counter: i64 = 0;
    let mut images = grid_thw.iter();
    let mut i = 0;
    while i < len {
        if input_ids[i] != image_token_id {
            for p in pos.iter_mut() {
                p.push(counter);
            }
            counter += 1;
            i += 1;
            continue;
        }
        let run = input_ids[i..].iter().take_while(|&&id| id == image_token_id).count();
        let &[t, h, w] = images.next().ok_or_else(|| {
            VlmError::Input(format!("more runs of image tokens than image_grid_thw entries ({})", grid_thw.len()))
        })?;
        let (lh, lw) = (h / merge, w / merge);
        if run != t * lh * lw {
            return Err(VlmError::Input(format!(
                "image at token {i} has {run} image tokens, its grid [{t}, {h}, {w}] needs {}",
                t * lh * lw
            )));
        }
        for ti in 0..t {
            for r in 0..lh {
                for c in 0..lw {
                    pos[0].push(counter + ti as i64);
                    pos[1].push(counter + r as i64);
                    pos[2].push(counter + c as i64);
                }
            }
        }
        counter += t.max(lh).max(lw) as i64;
        i += run;
    }
    if images.next().is_some() {
        return Err(VlmError::Input(format!(
            "image_grid_thw has {} entries but the prompt has fewer runs of image tokens",
            grid_thw.len()
        )));
    }
    Ok((pos, counter - len as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_index_places_image_on_grid() {
        // 2 text, 6 image tokens (grid 1×6×4, merge 2 → 3×2), 2 text.
        let ids = [1, 2, 9, 9, 9, 9, 9, 9, 3, 4];
        let (pos, delta) = rope_index(&ids, 9, &[[1, 6, 4]], 2).unwrap();
        assert_eq!(pos[0], vec![0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(pos[1], vec![0, 1, 2, 2, 3, 3, 4, 4, 5, 6]);
        assert_eq!(pos[2], vec![0, 1, 2, 3, 2, 3, 2, 3, 5, 6]);
        assert_eq!(delta, 7 - 10);
        assert!(rope_index(&ids, 9, &[[1, 4, 4]], 2).is_err());
        assert!(rope_index(&ids, 9, &[], 2).is_err());
    }
}
