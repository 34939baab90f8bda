//! Colour themes with semantic roles, from `themes/*.toml` (compiled in).
//! A theme may name a `parent` whose roles it overlays.

use std::collections::BTreeMap;
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

const BUILT_IN: [(&str, &str); 4] = [
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    ("high-contrast", include_str!("../../themes/high-contrast.toml")),
    ("mono", include_str!("../../themes/mono.toml")),
];

pub const ROLES: [&str; 11] =
    ["text", "muted", "accent", "up", "down", "warning", "critical", "selection", "border", "title", "header"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    // Declared so `deny_unknown_fields` accepts it; the file name is what counts.
    #[allow(dead_code)]
    name: String,
    #[serde(default)]
    parent: Option<String>,
    roles: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    pub text: Style,
    pub muted: Style,
    pub accent: Style,
    pub up: Style,
    pub down: Style,
    pub warning: Style,
    pub critical: Style,
    pub selection: Style,
    pub border: Style,
    pub title: Style,
    pub header: Style,
}

/// Parses "green", "black on cyan bold", "#26a69a dim", "reset reversed".
pub fn parse_style(spec: &str) -> Result<Style, String> {
    let mut style = Style::default();
    let mut words = spec.split_whitespace().peekable();
    let mut fg_set = false;
    while let Some(w) = words.next() {
        let m = match w {
            "bold" => Some(Modifier::BOLD),
            "dim" => Some(Modifier::DIM),
            "italic" => Some(Modifier::ITALIC),
            "underlined" => Some(Modifier::UNDERLINED),
            "reversed" => Some(Modifier::REVERSED),
            _ => None,
        };
        if let Some(m) = m {
            style = style.add_modifier(m);
        } else if w == "on" {
            let c = words.next().ok_or_else(|| format!("'{spec}': a colour must follow 'on'"))?;
            style = style.bg(Color::from_str(c).map_err(|_| format!("'{c}' is not a colour"))?);
        } else if !fg_set {
            style = style.fg(Color::from_str(w).map_err(|_| format!("'{w}' is not a colour or modifier"))?);
            fg_set = true;
        } else {
            return Err(format!("'{spec}': unexpected '{w}'"));
        }
    }
    Ok(style)
}

fn file(name: &str) -> Option<&'static str> {
    BUILT_IN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

fn roles_of(name: &str, depth: usize) -> Result<BTreeMap<String, String>, String> {
    if depth > 4 {
        return Err(format!("theme '{name}': parents nest too deep (a cycle?)"));
    }
    let text = file(name).ok_or_else(|| format!("no theme named '{name}' (themes: {})", names().join(", ")))?;
    let f: ThemeFile = toml::from_str(text).map_err(|e| format!("theme '{name}': {e}"))?;
    let mut roles = match &f.parent {
        Some(p) => roles_of(p, depth + 1)?,
        None => BTreeMap::new(),
    };
    roles.extend(f.roles);
    Ok(roles)
}

pub fn names() -> Vec<&'static str> {
    BUILT_IN.iter().map(|(n, _)| *n).collect()
}

impl Theme {
    /// A built-in theme by name, with its parents applied.
    pub fn load(name: &str) -> Result<Theme, String> {
        let roles = roles_of(name, 0)?;
        let get = |role: &str| -> Result<Style, String> {
            let spec = roles.get(role).ok_or_else(|| format!("theme '{name}' lacks the role '{role}'"))?;
            parse_style(spec).map_err(|e| format!("theme '{name}', role '{role}': {e}"))
        };
        if let Some(unknown) = roles.keys().find(|k| !ROLES.contains(&k.as_str())) {
            return Err(format!("theme '{name}': unknown role '{unknown}' (roles: {})", ROLES.join(", ")));
        }
        Ok(Theme {
            name: name.to_string(),
            text: get("text")?,
            muted: get("muted")?,
            accent: get("accent")?,
            up: get("up")?,
            down: get("down")?,
            warning: get("warning")?,
            critical: get("critical")?,
            selection: get("selection")?,
            border: get("border")?,
            title: get("title")?,
            header: get("header")?,
        })
    }

    /// The theme to start with: mono under NO_COLOR, else `wanted`, else dark.
    /// A theme that cannot be loaded falls back to dark with a warning.
    pub fn choose(wanted: Option<&str>, no_color: bool) -> (Theme, Option<String>) {
        let name = if no_color { "mono" } else { wanted.unwrap_or("dark") };
        match Theme::load(name) {
            Ok(t) => (t, None),
            Err(e) => (Theme::fallback(), Some(format!("{e}; using the dark theme"))),
        }
    }

    fn fallback() -> Theme {
        Theme::load("dark").unwrap_or(Theme {
            name: "dark".into(),
            text: Style::default(),
            muted: Style::default().add_modifier(Modifier::DIM),
            accent: Style::default().add_modifier(Modifier::BOLD),
            up: Style::default().fg(Color::Green),
            down: Style::default().fg(Color::Red),
            warning: Style::default().fg(Color::Yellow),
            critical: Style::default().fg(Color::LightRed),
            selection: Style::default().add_modifier(Modifier::REVERSED),
            border: Style::default(),
            title: Style::default().add_modifier(Modifier::BOLD),
            header: Style::default().add_modifier(Modifier::REVERSED),
        })
    }
}

/// The console's rules for its part of a config (see `config::Check`).
pub fn config_problems(c: &crate::config::Config) -> Vec<(String, String)> {
    if names().contains(&c.console.theme.as_str()) {
        return Vec::new();
    }
    vec![("console.theme".into(), format!("is not a theme: choose one of {}", names().join(", ")))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_theme_loads() {
        for n in names() {
            Theme::load(n).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn light_overlays_dark() {
        let (dark, light) = (Theme::load("dark").unwrap(), Theme::load("light").unwrap());
        assert_eq!(light.text, dark.text, "inherited");
        assert_ne!(light.up, dark.up, "overridden");
    }

    #[test]
    fn mono_uses_no_colour_and_no_color_selects_it() {
        let mono = Theme::load("mono").unwrap();
        for s in [mono.text, mono.muted, mono.up, mono.down, mono.critical, mono.selection, mono.header] {
            assert!(matches!(s.fg, None | Some(Color::Reset)) && matches!(s.bg, None | Some(Color::Reset)), "{s:?}");
        }
        assert_eq!(Theme::choose(Some("light"), true).0.name, "mono");
    }

    #[test]
    fn a_bad_theme_falls_back_with_a_warning() {
        let (t, warning) = Theme::choose(Some("neon"), false);
        assert_eq!(t.name, "dark");
        assert!(warning.unwrap().contains("no theme named 'neon'"));
        assert!(parse_style("green on").is_err());
        assert!(parse_style("chartreuse-ish").is_err());
        assert_eq!(
            parse_style("black on cyan bold").unwrap(),
            Style::default().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD)
        );
    }
}
