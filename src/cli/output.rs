//! Up-front checks of output paths, so a verb that works for minutes before writing fails at
//! once on an output it could never write.

use std::path::Path;

use baton::files::folder_of;
use miette::{miette, Result};

/// Checks that `path` could be written: not empty, not a folder, and its parent folder exists
/// and is not read-only. Creates nothing.
///
/// Only permission bits are looked at (no owner or ACL check): the atomic write at the end
/// still reports the rare folder that passes here but refuses the file.
pub fn check_output(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(miette!("the output path is empty"));
    }
    if path.is_dir() {
        return Err(miette!("cannot write {}: it is a folder", path.display()));
    }
    let parent = folder_of(path);
    let meta = std::fs::metadata(parent).map_err(|_| {
        miette!(
            "cannot write {}: folder {} does not exist",
            path.display(),
            parent.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(miette!(
            "cannot write {}: {} is not a folder",
            path.display(),
            parent.display()
        ));
    }
    if meta.permissions().readonly() {
        return Err(miette!(
            "cannot write {}: folder {} is read-only",
            path.display(),
            parent.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_new_file_in_a_folder_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.safetensors");
        check_output(&out).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn rejects_missing_folder_folder_target_file_parent_and_read_only_folder() {
        let dir = tempfile::tempdir().unwrap();
        let err = |p: &Path| check_output(p).unwrap_err().to_string();
        assert!(err(&dir.path().join("no/b.st")).contains("does not exist"));
        assert!(err(dir.path()).contains("it is a folder"));
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(err(&file.join("b.st")).contains("not a folder"));
        assert!(err(Path::new("")).contains("empty"));

        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let mut perms = std::fs::metadata(&ro).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&ro, perms.clone()).unwrap();
        let e = err(&ro.join("b.st"));
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&ro, perms).unwrap();
        assert!(e.contains("read-only"), "{e}");
    }
}
