//! The run panels' images as terminal graphics: one ratatui-image protocol per panel, resized
//! and encoded off the render path (a `ThreadProtocol` per panel, each with its own small encode
//! thread, so a response can only land on the panel that asked). A new preview replaces the
//! panel's protocol and bumps its id, so an encode still under way for an older preview is
//! dropped when it comes back.
//!
//! Which protocol reaches the screen is decided once, at start ([`fit_protocol`]): kitty before
//! 0.28 cannot show ratatui-image's kitty images (Unicode placeholders), so it gets half-blocks
//! (or sixel, where the terminal says it has it), with a note saying so.
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
use super::terminal::TerminalId;

/// Most bytes one preview frame may take on the wire.
pub const PREVIEW_BUDGET: usize = 100_000;

/// kitty draws ratatui-image's kitty images from this version on: they are Unicode placeholders
/// for a virtual placement (`U=1`), which older kitty rejects ("invalid key character: 0x55"),
/// leaving every panel a grid of placeholder boxes.
pub const KITTY_PLACEHOLDERS_SINCE: [u32; 2] = [0, 28];

/// The protocol the panels can really use on `terminal`, and a note naming the terminal's
/// version and the reason when that is not `protocol`: kitty graphics on a kitty older than
/// [`KITTY_PLACEHOLDERS_SINCE`] become sixel where the terminal says it has sixel (`sixel`),
/// else half-blocks. `forced_by` names where a forced `kitty` came from (`--graphics`), so the
/// note says it was overridden. Anything else (another terminal, an unknown version) stays.
pub fn fit_protocol(
    protocol: ProtocolType,
    terminal: Option<&TerminalId>,
    sixel: bool,
    forced_by: Option<&str>,
) -> (ProtocolType, Option<String>) {
    let old_kitty = terminal
        .filter(|t| t.is("kitty"))
        .filter(|t| t.at_least(&KITTY_PLACEHOLDERS_SINCE) == Some(false));
    let (ProtocolType::Kitty, Some(t)) = (protocol, old_kitty) else {
        return (protocol, None);
    };
    let (fallback, words) = if sixel {
        (ProtocolType::Sixel, "sixel")
    } else {
        (ProtocolType::Halfblocks, "half-blocks")
    };
    let [major, minor] = KITTY_PLACEHOLDERS_SINCE;
    let who = match forced_by {
        Some(source) => format!("{t} (kitty graphics set by {source})"),
        None => t.to_string(),
    };
    let note =
        format!("{who}: images as {words} (kitty < {major}.{minor} has no Unicode placeholders)");
    (fallback, Some(note))
}

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
        #[cfg(feature = "test-hooks")]
        test_log::worker(app.info.is_some(), app.fatal.as_deref());
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
        #[cfg(feature = "test-hooks")]
        {
            let drawn = match &slot.proto {
                Proto::Threaded(t) => t.size_for(Resize::Scale(None), area.as_size()),
                Proto::Inline(p) => Some(p.size_for(Resize::Scale(None), area.as_size())),
            };
            let drawn = drawn.map(|d| Rect::new(area.x, area.y, d.width, d.height));
            test_log::panel(key, area, drawn, !slot.preview);
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

/// TEST ONLY (feature `test-hooks`): where the graphics went, for tests/real_terminals.sh,
/// which screenshots a real terminal and needs each panel's cells. With
/// `SPEEDSCAPE_TEST_GRAPHICS_LOG=FILE`, FILE holds (rewritten whenever it changes) the protocol
/// chosen and why, what the terminal said about itself, the font size in pixels, and each
/// panel's cell rectangle with the image's part of it and whether it shows the final image.
#[cfg(feature = "test-hooks")]
pub mod test_log {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use ratatui::layout::Rect;
    use serde_json::{Value, json};

    use super::PanelKey;

    static STATE: Mutex<Option<(Value, BTreeMap<PanelKey, Value>)>> = Mutex::new(None);

    fn path() -> Option<std::path::PathBuf> {
        std::env::var_os("SPEEDSCAPE_TEST_GRAPHICS_LOG").map(Into::into)
    }

    fn rect(r: Rect) -> Value {
        json!([r.x, r.y, r.width, r.height])
    }

    /// The choice made at start.
    pub fn graphics(pick: &crate::tui::GraphicsPick) {
        if path().is_none() {
            return;
        }
        let font = pick.picker.font_size();
        let (cols, rows) = crossterm::terminal::size().unwrap_or((0, 0));
        let head = json!({
            "protocol": format!("{:?}", pick.picker.protocol_type()).to_lowercase(),
            "how": pick.how,
            "note": pick.note,
            "terminal": pick.terminal.as_ref().map(|t| t.to_string()),
            "font": [font.width, font.height],
            "size": [cols, rows],
        });
        let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
        let (old, panels) = state.take().unwrap_or_else(|| (json!({}), BTreeMap::new()));
        let mut head = head;
        if let Some(worker) = old.get("worker") {
            head["worker"] = worker.clone();
        }
        *state = Some((head, panels));
        write(state.as_ref());
    }

    /// Whether the worker is ready (the model open), or why it stopped.
    pub fn worker(ready: bool, fatal: Option<&str>) {
        if path().is_none() {
            return;
        }
        let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
        let (head, _) = state.get_or_insert_with(|| (json!({}), BTreeMap::new()));
        let entry = json!({ "ready": ready, "fatal": fatal });
        if head.get("worker") == Some(&entry) {
            return;
        }
        head["worker"] = entry;
        write(state.as_ref());
    }

    /// Panel `key` was drawn into `area`, its image covering `drawn`.
    pub fn panel(key: PanelKey, area: Rect, drawn: Option<Rect>, last: bool) {
        if path().is_none() {
            return;
        }
        let entry = json!({
            "exercise": key.0,
            "run": key.1,
            "area": rect(area),
            "image": drawn.map(rect),
            "final": last,
        });
        let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
        let (_, panels) = state.get_or_insert_with(|| (json!({}), BTreeMap::new()));
        if panels.get(&key) == Some(&entry) {
            return;
        }
        panels.insert(key, entry);
        write(state.as_ref());
    }

    fn write(state: Option<&(Value, BTreeMap<PanelKey, Value>)>) {
        let (Some(path), Some((head, panels))) = (path(), state) else {
            return;
        };
        let mut value = head.clone();
        value["panels"] = Value::Array(panels.values().cloned().collect());
        let text = format!("{value:#}\n");
        // Best effort: a failed write shows as a test waiting in vain, with the file's name.
        let _ = crate::report::write_atomic(&path, |f| {
            f.write_all(text.as_bytes())?;
            Ok(())
        });
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

    fn kitty(version: &str) -> TerminalId {
        TerminalId {
            name: "kitty".into(),
            version: Some(version.into()),
        }
    }

    #[test]
    fn kitty_before_0_28_gets_half_blocks_with_a_note_naming_version_and_reason() {
        let (p, note) = fit_protocol(ProtocolType::Kitty, Some(&kitty("0.26.5")), false, None);
        assert_eq!(p, ProtocolType::Halfblocks);
        assert_eq!(
            note.as_deref(),
            Some("kitty 0.26.5: images as half-blocks (kitty < 0.28 has no Unicode placeholders)")
        );
        // Where the terminal says it has sixel, sixel (kitty itself never does).
        let (p, note) = fit_protocol(ProtocolType::Kitty, Some(&kitty("0.27.1")), true, None);
        assert_eq!(p, ProtocolType::Sixel);
        assert!(note.unwrap().contains("images as sixel"));
    }

    #[test]
    fn a_forced_kitty_on_an_old_kitty_is_overridden_and_says_so() {
        let (p, note) = fit_protocol(
            ProtocolType::Kitty,
            Some(&kitty("0.26.5")),
            false,
            Some("--graphics"),
        );
        assert_eq!(p, ProtocolType::Halfblocks);
        assert_eq!(
            note.as_deref(),
            Some(
                "kitty 0.26.5 (kitty graphics set by --graphics): images as half-blocks (kitty < 0.28 has no Unicode placeholders)"
            )
        );
    }

    #[test]
    fn placeholder_kitty_unknown_versions_and_other_terminals_keep_the_protocol() {
        for t in [kitty("0.28.0"), kitty("0.35.2"), kitty("nightly")] {
            assert_eq!(
                fit_protocol(ProtocolType::Kitty, Some(&t), false, None),
                (ProtocolType::Kitty, None),
                "{t}"
            );
        }
        let bare = TerminalId {
            name: "kitty".into(),
            version: None,
        };
        let xterm = TerminalId {
            name: "XTerm".into(),
            version: Some("379".into()),
        };
        assert_eq!(
            fit_protocol(ProtocolType::Kitty, Some(&bare), false, None),
            (ProtocolType::Kitty, None)
        );
        assert_eq!(
            fit_protocol(ProtocolType::Kitty, None, false, None),
            (ProtocolType::Kitty, None)
        );
        // A forced kitty elsewhere is the user's choice (and the real-terminal test's way to
        // break the screen on purpose).
        assert_eq!(
            fit_protocol(ProtocolType::Kitty, Some(&xterm), true, Some("--graphics")),
            (ProtocolType::Kitty, None)
        );
        // Other protocols on an old kitty are not kitty's placeholders.
        assert_eq!(
            fit_protocol(ProtocolType::Sixel, Some(&kitty("0.26.5")), false, None),
            (ProtocolType::Sixel, None)
        );
    }
}
