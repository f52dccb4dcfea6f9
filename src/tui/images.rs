//! The run panels' images as terminal graphics: one ratatui-image protocol per panel, resized
//! and encoded off the render path (a `ThreadProtocol` per panel, each with its own small encode
//! thread, so a response can only land on the panel that asked). A new preview replaces the
//! panel's protocol and bumps its id, so an encode still under way for an older preview is
//! dropped when it comes back.
//!
//! Previews are sent at latent resolution and scaled by the protocol into an area capped so one
//! frame stays under [`PREVIEW_BUDGET`] bytes; the bytes each frame really took are measured from
//! the cells written and shown in the help overlay.

use std::collections::HashMap;
use std::sync::mpsc;

use image::{DynamicImage, RgbImage};
use ratatui::buffer::{Buffer, Cell, CellDiffOption};
use ratatui::layout::{Rect, Size};
use ratatui::style::Color;
use ratatui_image::errors::Errors;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::StatefulProtocol;
use ratatui_image::thread::{ResizeRequest, ResizeResponse, ThreadProtocol};
use ratatui_image::{Resize, ResizeEncodeRender, StatefulImage};
use tokio::sync::mpsc::UnboundedSender;

use super::app::App;

/// Most bytes one preview frame may take on the wire.
pub const PREVIEW_BUDGET: usize = 100_000;

/// Which panel: (exercise index, run index, or [`CONTROL_PANEL`]).
pub type PanelKey = (usize, usize);

/// The run index of an exercise's control image panel.
pub const CONTROL_PANEL: usize = usize::MAX;

/// A finished resize+encode, tagged with the slot that asked.
pub struct Encoded {
    pub slot: u64,
    pub result: Result<ResizeResponse, Errors>,
}

/// Where encoding happens.
pub enum Encoder {
    /// Off the render path: a thread per panel; results come back on this sender (the loop
    /// passes them to [`Images::on_encoded`]).
    Threaded(UnboundedSender<Encoded>),
    /// During `draw` (tests: deterministic, one pass).
    Inline,
}

enum Proto {
    Threaded(ThreadProtocol),
    Inline(StatefulProtocol),
}

impl ResizeEncodeRender for Proto {
    fn resize_encode(&mut self, resize: &Resize, size: Size) {
        match self {
            Proto::Threaded(p) => p.resize_encode(resize, size),
            Proto::Inline(p) => p.resize_encode(resize, size),
        }
    }
    fn render(&mut self, area: Rect, buf: &mut Buffer) {
        match self {
            Proto::Threaded(p) => p.render(area, buf),
            Proto::Inline(p) => p.render(area, buf),
        }
    }
    fn needs_resize(&self, resize: &Resize, size: Size) -> Option<Size> {
        match self {
            Proto::Threaded(p) => p.needs_resize(resize, size),
            Proto::Inline(p) => p.needs_resize(resize, size),
        }
    }
}

struct Slot {
    serial: u64,
    /// `RunState::image_gen` this protocol was made from.
    image_gen: u64,
    preview: bool,
    proto: Proto,
    /// An encode is under way (threaded): draw the last cells meanwhile.
    pending: bool,
    /// What the last encoded frame drew, to repeat while the next one is encoded.
    last: Option<(Rect, Vec<Cell>)>,
}

pub struct Images {
    picker: Picker,
    encoder: Encoder,
    slots: HashMap<PanelKey, Slot>,
    serials: u64,
    /// Bytes of the last preview frame drawn (`None`: none yet).
    pub preview_bytes: Option<usize>,
    /// Bytes of the last finished image drawn.
    pub final_bytes: Option<usize>,
}

impl Images {
    pub fn new(picker: Picker, encoder: Encoder) -> Self {
        Self {
            picker,
            encoder,
            slots: HashMap::new(),
            serials: 0,
            preview_bytes: None,
            final_bytes: None,
        }
    }

    pub fn protocol(&self) -> ProtocolType {
        self.picker.protocol_type()
    }

    /// Brings every panel's protocol up to date with the app's images: each run's, and the
    /// control image of an exercise under a ControlNet ([`CONTROL_PANEL`]).
    pub fn sync(&mut self, app: &App) {
        for (e, ex) in app.exercises.iter().enumerate() {
            // The landscape shows no images: its dozens of runs get no panels (nor threads).
            if ex.landscape.is_some() {
                self.slots.retain(|k, _| k.0 != e);
                continue;
            }
            for (r, run) in ex.runs.iter().enumerate() {
                self.show(
                    (e, r),
                    run.image.as_deref(),
                    run.image_gen,
                    !run.image_final,
                );
            }
            let view = &ex.control_view;
            let shown = view
                .image
                .as_deref()
                .filter(|_| ex.control_image().is_some());
            self.show((e, CONTROL_PANEL), shown, view.image_gen, false);
        }
    }

    /// Panel `key` shows `image` (generation `image_gen`; `preview`: a step's, not the final
    /// one), re-encoded only when the generation changed; no image drops the panel's slot.
    fn show(&mut self, key: PanelKey, image: Option<&RgbImage>, image_gen: u64, preview: bool) {
        let Some(image) = image else {
            self.slots.remove(&key);
            return;
        };
        if self
            .slots
            .get(&key)
            .is_some_and(|s| s.image_gen == image_gen)
        {
            return;
        }
        let proto = self
            .picker
            .new_resize_protocol(DynamicImage::ImageRgb8(image.clone()));
        let slot = self.slots.entry(key).or_insert_with(|| {
            self.serials += 1;
            new_slot(self.serials, &self.encoder)
        });
        slot.image_gen = image_gen;
        slot.preview = preview;
        match &mut slot.proto {
            Proto::Threaded(t) => t.replace_protocol(proto),
            Proto::Inline(p) => *p = proto,
        }
    }

    /// An encode came back: true when it was still wanted (redraw).
    pub fn on_encoded(&mut self, encoded: Encoded) -> bool {
        let Ok(response) = encoded.result else {
            return false;
        };
        for slot in self.slots.values_mut() {
            if slot.serial == encoded.slot
                && let Proto::Threaded(t) = &mut slot.proto
            {
                return t.update_resized_protocol(response);
            }
        }
        false
    }

    /// Draws panel `key`'s image into `area` (nothing when it has none).
    pub fn render(&mut self, key: PanelKey, area: Rect, buf: &mut Buffer) {
        let font = self.picker.font_size();
        let protocol = self.picker.protocol_type();
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let area = if slot.preview {
            capped_area(area, protocol, (font.width, font.height))
        } else {
            area
        };
        if area.width == 0 || area.height == 0 {
            return;
        }
        let resize = Resize::Scale(None);
        ratatui::widgets::StatefulWidget::render(
            StatefulImage::<Proto>::new().resize(resize),
            area,
            buf,
            &mut slot.proto,
        );
        // A threaded protocol is away (being encoded) until its response comes back.
        slot.pending = match &slot.proto {
            Proto::Threaded(t) => t.protocol_type().is_none(),
            Proto::Inline(_) => false,
        };
        if slot.pending {
            // The new frame is being encoded; repeat the last one so the panel does not blink.
            if let Some((last_area, cells)) = &slot.last
                && *last_area == area
            {
                copy_in(buf, area, cells);
            }
            return;
        }
        let cells = copy_out(buf, area);
        let bytes = wire_bytes(&cells);
        if slot.preview {
            self.preview_bytes = Some(bytes);
        } else {
            self.final_bytes = Some(bytes);
        }
        slot.last = Some((area, cells));
    }
}

fn new_slot(serial: u64, encoder: &Encoder) -> Slot {
    let proto = match encoder {
        Encoder::Inline => Proto::Inline(
            Picker::halfblocks()
                .new_resize_protocol(DynamicImage::ImageRgb8(image::RgbImage::new(1, 1))),
        ),
        Encoder::Threaded(out) => {
            let (tx, rx) = mpsc::channel::<ResizeRequest>();
            let out = out.clone();
            // Ends when the slot (its sender) is dropped or the loop is gone.
            std::thread::spawn(move || {
                for request in rx {
                    let result = request.resize_encode();
                    if out
                        .send(Encoded {
                            slot: serial,
                            result,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            });
            Proto::Threaded(ThreadProtocol::new(tx, None))
        }
    };
    Slot {
        serial,
        image_gen: u64::MAX,
        preview: true,
        proto,
        pending: false,
        last: None,
    }
}

/// Rough wire cost of one pixel (graphics protocols) or one cell (halfblocks).
fn cost(protocol: ProtocolType) -> f64 {
    match protocol {
        // "▀" plus a 24-bit foreground and background escape.
        ProtocolType::Halfblocks => 40.0,
        // Pixels in base64 (measured ~3 bytes a pixel on noise, see the test below).
        ProtocolType::Kitty => 3.2,
        // Palette indices in six-pixel bands, one colour register per band pass: measured
        // 1.9–2.7 bytes a pixel on noise (see the test below), so budget 3.
        ProtocolType::Sixel => 3.0,
        // PNG of a noisy image, base64.
        ProtocolType::Iterm2 => 3.0 * 4.0 / 3.0,
    }
}

/// The largest centred part of `area`, same shape, whose frame fits [`PREVIEW_BUDGET`].
pub fn capped_area(area: Rect, protocol: ProtocolType, font: (u16, u16)) -> Rect {
    let cells = f64::from(area.width) * f64::from(area.height);
    let units = if protocol == ProtocolType::Halfblocks {
        cells
    } else {
        cells * f64::from(font.0) * f64::from(font.1)
    };
    let bytes = units * cost(protocol);
    if bytes <= PREVIEW_BUDGET as f64 {
        return area;
    }
    let k = (PREVIEW_BUDGET as f64 / bytes).sqrt();
    let w = ((f64::from(area.width) * k).floor() as u16).max(1);
    let h = ((f64::from(area.height) * k).floor() as u16).max(1);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn copy_out(buf: &Buffer, area: Rect) -> Vec<Cell> {
    let area = area.intersection(buf.area);
    area.positions().map(|p| buf[p].clone()).collect()
}

fn copy_in(buf: &mut Buffer, area: Rect, cells: &[Cell]) {
    let area = area.intersection(buf.area);
    for (p, c) in area.positions().zip(cells) {
        buf[p] = c.clone();
    }
}

/// Bytes the cells cost on the wire: their symbols (the graphics escape sequences live in them)
/// plus a 24-bit colour escape for each coloured cell side.
pub fn wire_bytes(cells: &[Cell]) -> usize {
    let colour = |c: Color| match c {
        Color::Rgb(..) => 19,
        Color::Reset => 0,
        _ => 5,
    };
    cells
        .iter()
        .filter(|c| c.diff_option != CellDiffOption::Skip)
        .map(|c| c.symbol().len() + colour(c.fg) + colour(c.bg))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_kitty_panel_is_capped_to_the_budget() {
        let area = Rect::new(0, 0, 50, 30);
        let r = capped_area(area, ProtocolType::Kitty, (10, 20));
        let bytes = f64::from(r.width) * f64::from(r.height) * 200.0 * cost(ProtocolType::Kitty);
        assert!(bytes <= PREVIEW_BUDGET as f64, "{r:?}");
        assert!(r.width >= 10 && r.height >= 5, "{r:?}");
        // Centred.
        assert_eq!(r.x, (50 - r.width) / 2);
    }

    #[test]
    fn a_small_halfblocks_panel_is_left_alone() {
        let area = Rect::new(3, 4, 40, 20);
        assert_eq!(capped_area(area, ProtocolType::Halfblocks, (10, 20)), area);
    }

    /// Renders a 64×64 preview (SD v1.5's latent size) of noise, the worst case for every
    /// encoding, into a run panel of the 80×24 and 160×48 layouts with each protocol, and counts
    /// the bytes that frame puts on the wire.
    #[test]
    fn a_preview_frame_fits_the_budget_with_every_protocol() {
        let mut state = 1u32;
        let noise = image::RgbImage::from_fn(64, 64, |_, _| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let [a, b, c, _] = state.to_le_bytes();
            image::Rgb([a, b, c])
        });
        let font = (10, 20);
        for panel in [Rect::new(0, 0, 25, 6), Rect::new(0, 0, 52, 15)] {
            for protocol in [
                ProtocolType::Halfblocks,
                ProtocolType::Kitty,
                ProtocolType::Sixel,
                ProtocolType::Iterm2,
            ] {
                // halfblocks() assumes a 10×20-pixel font, as `font` says.
                let mut picker = Picker::halfblocks();
                picker.set_protocol_type(protocol);
                let mut proto = picker.new_resize_protocol(DynamicImage::ImageRgb8(noise.clone()));
                let area = capped_area(panel, protocol, font);
                let mut buf = Buffer::empty(panel);
                ratatui::widgets::StatefulWidget::render(
                    StatefulImage::<StatefulProtocol>::default().resize(Resize::Scale(None)),
                    area,
                    &mut buf,
                    &mut proto,
                );
                let bytes = wire_bytes(&copy_out(&buf, area));
                eprintln!(
                    "{protocol:?} in {}x{} cells: {bytes} bytes a frame",
                    panel.width, panel.height
                );
                assert!(bytes > 0, "{protocol:?} drew nothing");
                assert!(
                    bytes <= PREVIEW_BUDGET,
                    "{protocol:?} in {panel:?}: {bytes} bytes"
                );
            }
        }
    }
}
