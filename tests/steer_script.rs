//! The recipe language: schedule values through the interpreter, closures sampled once per
//! step, plan building, sandbox limits, output-path rules and error reports.

mod steer_common;

use std::path::Path;

use baton::script::{DryRunLog, RecipeOptions, RecipeOutcome, ScriptError};
use baton::steer::StrengthUnit;

struct Run {
    outcome: Result<RecipeOutcome, Box<ScriptError>>,
    log: DryRunLog,
    _lib: tempfile::TempDir,
    out: tempfile::TempDir,
}

fn run_with(source: &str, tweak: impl FnOnce(&mut RecipeOptions)) -> Run {
    let lib = steer_common::library(8, 4);
    let out = tempfile::tempdir().unwrap();
    let (outcome, log) = steer_common::dry_run(source, lib.path(), out.path(), tweak);
    Run {
        outcome,
        log,
        _lib: lib,
        out,
    }
}

fn run(source: &str) -> Run {
    run_with(source, |_| {})
}

fn printed(source: &str) -> Vec<String> {
    match run(source).outcome {
        Ok(o) => o.printed,
        Err(e) => panic!("{:?}", miette::Report::new(*e)),
    }
}

fn error(source: &str) -> ScriptError {
    error_and_library(source).0
}

fn error_and_library(source: &str) -> (ScriptError, String) {
    let r = run(source);
    let lib = r._lib.path().display().to_string();
    match r.outcome {
        Ok(_) => panic!("expected an error"),
        Err(e) => (*e, lib),
    }
}

#[test]
fn schedule_values_through_the_interpreter() {
    let p = printed(
        r#"
        print(linear(0, 1, 0, 20).value(5));
        print((0.5 * exp_decay(0.998)).value(1.0));
        print(crossfade(1, 0, 5, 15).value(10));
        print(seq([[rise(0, 2), 2], [fall(0, 2), 2]]).value(3.5));
        print(clamp(2 * sine(4), 0, 1.5).value(1));
        print(shift(step(1), 2).value(2.5));
        print(keyframes([[0, 0], [2, 1]], "smooth").value(0.5));
        "#,
    );
    let v: Vec<f64> = p.iter().map(|s| s.parse().unwrap()).collect();
    let expect = [
        0.25,
        0.5 * 0.998f64.powi(50),
        0.5,
        0.25,
        1.5,
        0.0,
        0.25 * 0.25 * (3.0 - 0.5),
    ];
    for (a, b) in v.iter().zip(expect) {
        assert!((a - b).abs() < 1e-12, "{v:?} vs {expect:?}");
    }
}

#[test]
fn pieces_become_plans_and_curves_are_sampled_per_step() {
    let r = run(r#"
        let d = direction("notes:C");
        let p = piece("x", 1.0)
            .steer(d, 0.5 * curve(|t| t * 2.0))
            .steer(direction("notes:G"), 0.25, #{ gate: 0.5, layers: "top:2", unit: "residual" })
            .seed(9);
        render(p, "a/b.wav");
        "#);
    if let Err(e) = r.outcome {
        panic!("{:?}", miette::Report::new(*e));
    }
    assert_eq!(r.log.requests.len(), 1);
    let req = &r.log.requests[0];
    assert_eq!(req.out, r.out.path().join("a/b.wav"));
    assert_eq!(req.plan.seed, 9);
    assert_eq!(req.plan.terms.len(), 2);
    assert_eq!(req.plan.terms[1].gate, Some(0.5));
    assert_eq!(
        req.plan.terms.iter().map(|t| t.unit).collect::<Vec<_>>(),
        [StrengthUnit::Absolute, StrengthUnit::Residual]
    );
    let e = error(r#"piece("x", 1.0).steer(direction("notes:C"), 1, #{ unit: "relative" })"#);
    assert!(e.message.contains("absolute or residual"), "{}", e.message);
    // A bundle without norms (trained before they were recorded) is refused at the steer call,
    // before anything renders.
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/steer-direction.safetensors");
    let old = run_with(
        "let d = direction(\"old:dir\");\nlet p = piece(\"x\", 1.0).steer(d, 0.1, #{ unit: \"residual\" });",
        |o| {
            std::fs::create_dir_all(o.directions.join("old")).unwrap();
            std::fs::copy(&fixture, o.directions.join("old/dir.safetensors")).unwrap();
        },
    );
    let e = *old.outcome.unwrap_err();
    assert!(e.message.contains("has no residual norms"), "{}", e.message);
    assert_eq!(e.location.map(|l| l.1), Some(2));
    assert!(old.log.requests.is_empty());
    let c = &r.log.coefficients[0];
    assert_eq!(c[0].len(), 50);
    for (s, v) in c[0].iter().enumerate() {
        assert!((v - 0.5 * 2.0 * s as f64 / 50.0).abs() < 1e-12);
    }
    assert!(c[1].iter().all(|v| *v == 0.0 || *v == 0.25));
    assert!(c[1].contains(&0.0) && c[1].contains(&0.25));
}

#[test]
fn tempo_turns_time_into_beats() {
    let r = run(
        r#"render(piece("x", 1.0).tempo(120).steer(direction("notes:C"), linear(0, 1, 0, 2)), "x.wav");"#,
    );
    assert!(r.outcome.is_ok());
    let c = &r.log.coefficients[0][0];
    // 120 bpm: step 25 (0.5 s) is beat 1, half-way along a 2-beat ramp.
    assert!((c[25] - 0.5).abs() < 1e-12, "{}", c[25]);
}

#[test]
fn overrides_from_the_command_line() {
    let r = run_with(
        r#"model("facebook/musicgen-large"); render(piece("x", 30).steer(direction("notes:C"), 1), "x.wav");"#,
        |o| {
            o.model_override = Some("tests/fixtures/tiny-a".into());
            o.seconds_override = Some(0.2);
            o.greedy = true;
        },
    );
    assert!(r.outcome.is_ok());
    let req = &r.log.requests[0];
    assert_eq!(req.model, "tests/fixtures/tiny-a");
    assert_eq!(req.seconds, 0.2);
    assert_eq!(req.sampling, baton::model::Sampling::Greedy);
    let r = run(
        r#"model("facebook/musicgen-large"); render(piece("x", 1).steer(direction("notes:C"), 1), "x.wav");"#,
    );
    assert_eq!(r.log.requests[0].model, "facebook/musicgen-large");
}

#[test]
fn an_endless_loop_ends_with_a_clear_error() {
    let r = run_with("let x = 0; loop { x += 1; }", |o| {
        o.limits.max_operations = 100_000
    });
    let e = *r.outcome.unwrap_err();
    assert!(e.message.contains("Too many operations"), "{}", e.message);
    assert!(e.help.unwrap().contains("endless loop"));
    assert_eq!(e.location.map(|l| l.1), Some(1));
}

#[test]
fn runaway_recursion_and_huge_strings_are_stopped() {
    let e = error("fn f(n) { f(n + 1) } f(0);");
    assert!(
        e.message.contains("Stack overflow")
            || e.help.as_deref().unwrap_or("").contains("call depth"),
        "{}",
        e.message
    );
    let r = run_with(r#"let s = "x"; loop { s += s; }"#, |o| {
        o.limits.max_string_size = 1000
    });
    let e = *r.outcome.unwrap_err();
    assert!(e.message.contains("too large"), "{}", e.message);
}

#[test]
fn writes_stay_under_the_output_folder() {
    for path in ["../x.wav", "/tmp/x.wav", "a/../../x.wav"] {
        let e = error(&format!(r#"render(piece("x", 1.0), "{path}");"#));
        assert!(
            e.message.contains("only write under the output folder"),
            "{}",
            e.message
        );
    }
    let e = error(r#"render(piece("x", 1.0), "x.mp3");"#);
    assert!(e.message.contains(".wav"), "{}", e.message);
    let e = error(r#"eval("1 + 1")"#);
    assert!(e.message.contains("eval"), "{}", e.message);
    let allowed = tempfile::tempdir().unwrap();
    let target = allowed.path().join("x.wav");
    let src = format!(
        r#"render(piece("x", 1.0).steer(direction("notes:C"), 1), "{}");"#,
        target.display()
    );
    let dir = allowed.path().to_path_buf();
    let r = run_with(&src, move |o| o.allow_write = vec![dir]);
    assert!(r.outcome.is_ok());
    assert_eq!(r.log.requests[0].out, target);
}

#[test]
fn unknown_direction_names_suggest_the_closest() {
    let e = error("let d = direction(\"notes:c#\");");
    assert!(
        e.message.contains("unknown direction `notes:c#`"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("closest known: notes:C#"),
        "{}",
        e.message
    );
    assert_eq!(e.location.as_ref().map(|l| (l.1, l.2)), Some((1, 9)));
}

#[test]
fn errors_inside_imported_modules_point_into_the_module() {
    let e = error("import \"theory\" as th;\nlet n = th::transpose(\"H\", 2);");
    assert!(e.message.contains("unknown pitch class"), "{}", e.message);
    let (src, line, _) = e.location.clone().unwrap();
    assert_eq!(src, "theory");
    assert_eq!(line, 11); // the `throw` in stdlib/theory.rhai
    let e = error("import \"nope\" as x;");
    assert!(e.message.contains("Module not found"), "{}", e.message);
    assert!(
        e.help.as_deref().unwrap_or("").contains("NAME.rhai"),
        "{:?}",
        e.help
    );
    // A namespace with no import says what is missing.
    let e = error("let a = 1;\nprint(sch::swell(0.0, 1.0, 2.0));");
    let help = e.help.clone().unwrap_or_default();
    assert!(help.contains("`sch::` names no imported module"), "{help}");
}

#[test]
fn direction_algebra_in_recipes() {
    let p = printed(
        r#"
        let c = direction("notes:C");
        let g = direction("notes:G");
        let o = c.orth(g);
        print(o.cosine(g)["2"].abs() < 1e-6);
        print(c.top(2).blocks.len());
        print(c.blocks(1..3).blocks);
        print((2 * c - c).cosine(c)["0"]);
        print(probe("notes:C").best_block == c.best_block);
        "#,
    );
    assert_eq!(p[0], "true");
    assert_eq!(p[1], "2");
    assert_eq!(p[2], "[1, 2]");
    assert!((p[3].parse::<f64>().unwrap() - 1.0).abs() < 1e-6);
    assert_eq!(p[4], "true");
}

fn render_report(e: ScriptError) -> String {
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(200)
        .render_report(&mut out, &e)
        .unwrap();
    out
}

/// Compares with tests/snapshots/NAME.txt; `UPDATE_SNAPSHOTS=1` rewrites it.
fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/snapshots/{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual, expected,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 to accept)"
    );
}

#[test]
fn error_report_snapshots() {
    let (e, lib) = error_and_library(
        "let len = 20.0;\nlet cs = direction(\"notes:c#\");\nlet p = piece(\"lofi\", len).steer(cs, 0.6);\n",
    );
    snapshot(
        "steer_unknown_direction",
        &render_report(e).replace(&lib, "LIB"),
    );
    let e = error("let s = lineer(0, 1, 0, 10);\n");
    snapshot("steer_unknown_function", &render_report(e));
    let e = error("import \"theory\" as th;\n\nlet n = th::transpose(\"H\", 2);\n");
    snapshot("steer_error_in_module", &render_report(e));
    let e = error(
        "let p = piece(\"lofi\", 20.0)\n    .steer(direction(\"notes:C\"), linear(0, 1, 0))\n",
    );
    snapshot("steer_wrong_arguments", &render_report(e));
    let e = error("let x = [1, 2;\n");
    snapshot("steer_syntax_error", &render_report(e));
}
