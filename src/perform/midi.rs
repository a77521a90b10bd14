//! MIDI input: a controller's knobs and faders (control-change messages) set
//! [`crate::steer::knobs`], which `knob(cc)` schedules read as each step is made. Through midir
//! (ALSA on Linux, CoreMIDI, WinMM); nothing else of MIDI is read.

use midir::{Ignore, MidiInput, MidiInputConnection};

use crate::steer::knobs;

/// An open MIDI input; knobs follow it until it is dropped.
pub struct MidiKnobs {
    _connection: MidiInputConnection<()>,
    /// The port's name.
    pub port: String,
}

fn client() -> Result<MidiInput, String> {
    let mut input = MidiInput::new("baton").map_err(|e| format!("cannot open MIDI input: {e}"))?;
    input.ignore(Ignore::All);
    Ok(input)
}

/// Names of the MIDI input ports there are now.
pub fn ports() -> Result<Vec<String>, String> {
    let input = client()?;
    Ok(input
        .ports()
        .iter()
        .map(|p| input.port_name(p).unwrap_or_else(|_| "?".into()))
        .collect())
}

/// Connects to the port `port` names: its number in [`ports`]'s list, or a part of its name.
pub fn connect(port: &str) -> Result<MidiKnobs, String> {
    let input = client()?;
    let found: Vec<(usize, String)> = input
        .ports()
        .iter()
        .enumerate()
        .map(|(i, p)| (i, input.port_name(p).unwrap_or_default()))
        .collect();
    let chosen = match port.trim().parse::<usize>() {
        Ok(i) => found.iter().find(|(j, _)| *j == i),
        Err(_) => found
            .iter()
            .find(|(_, name)| name.to_lowercase().contains(&port.trim().to_lowercase())),
    };
    let Some((index, name)) = chosen.cloned() else {
        let listed: Vec<String> = found.iter().map(|(i, n)| format!("{i}: {n}")).collect();
        return Err(if listed.is_empty() {
            format!("no MIDI input port {port:?}: there are no MIDI inputs")
        } else {
            format!(
                "no MIDI input port {port:?}; there are {}",
                listed.join(", ")
            )
        });
    };
    let ports = input.ports();
    let midi_port = ports
        .get(index)
        .ok_or_else(|| format!("MIDI port {name:?} went away"))?;
    let connection = input
        .connect(
            midi_port,
            "baton-knobs",
            |_stamp, message, _| {
                if let Some((cc, value)) = knobs::control_change(message) {
                    knobs::set_midi(cc, value);
                }
            },
            (),
        )
        .map_err(|e| format!("cannot connect to MIDI port {name:?}: {e}"))?;
    Ok(MidiKnobs {
        _connection: connection,
        port: name,
    })
}
