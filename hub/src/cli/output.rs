//! Plain-text tables for listings (every listing also has `--json`).

/// Renders rows under a header with columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Prints a value as pretty JSON on stdout.
/// A follow-up command to print as a hint: `matchpoint ARGS [--config F]`, with `--config` when
/// the configuration is not the default `./matchpoint.toml`, so the line can be pasted as is.
pub fn hint(config: &std::path::Path, args: &str) -> String {
    if config == std::path::Path::new("matchpoint.toml")
        || config == std::path::Path::new("./matchpoint.toml")
    {
        format!("matchpoint {args}")
    } else {
        format!("matchpoint {args} --config {}", config.display())
    }
}

pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::hint;

    #[test]
    fn hints_name_the_configuration_unless_it_is_the_default() {
        assert_eq!(
            hint(std::path::Path::new("matchpoint.toml"), "runs show 3"),
            "matchpoint runs show 3"
        );
        assert_eq!(
            hint(std::path::Path::new("demo/matchpoint.toml"), "runs show 3"),
            "matchpoint runs show 3 --config demo/matchpoint.toml"
        );
    }

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let t = super::table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "a    bb\nxxx  y\n");
    }
}
