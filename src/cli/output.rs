//! Up-front checks of output paths, so a verb that works for minutes before writing fails at
//! once on an output it could never write.

use std::path::{Path, PathBuf};

use baton::files::folder_of;
use miette::{miette, Result};

/// Checks that `path` could be written: not empty, not a folder or other special file baton
/// would not replace (see [`baton::files::output_target`]), and its parent folder exists and is
/// not read-only. Creates nothing.
///
/// Only permission bits are looked at (no owner or ACL check): the atomic write at the end
/// still reports the rare folder that passes here but refuses the file.
pub fn check_output(path: &Path) -> Result<()> {
    check_path(path)?;
    let parent = folder_of(path);
    if !parent.exists() {
        return Err(miette!(
            "cannot write {}: folder {} does not exist",
            path.display(),
            parent.display()
        ));
    }
    check_folder(path, parent)
}

/// Folders to create before an output is written (see [`check_output_in_new_folder`]).
#[must_use = "create the folder before writing the output"]
pub struct NewFolder(Option<PathBuf>);

impl NewFolder {
    /// Creates the output's folder (and any missing above it), when it does not exist yet.
    pub fn create(&self) -> Result<()> {
        match &self.0 {
            Some(folder) => std::fs::create_dir_all(folder)
                .map_err(|e| miette!("cannot create folder {}: {e}", folder.display())),
            None => Ok(()),
        }
    }
}

/// Like [`check_output`], but the output's folder may be missing (a new concept folder of the
/// direction library): then the nearest folder above it that exists must be writable, and
/// [`NewFolder::create`] makes the rest once the output is ready. Creates nothing itself.
pub fn check_output_in_new_folder(path: &Path) -> Result<NewFolder> {
    check_path(path)?;
    let parent = folder_of(path);
    if parent.exists() {
        return check_folder(path, parent).map(|()| NewFolder(None));
    }
    let existing = parent
        .ancestors()
        .skip(1)
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(Path::new("."));
    check_folder(path, existing)?;
    Ok(NewFolder(Some(parent.to_path_buf())))
}

fn check_path(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(miette!("the output path is empty"));
    }
    if path.is_dir() {
        return Err(miette!("cannot write {}: it is a folder", path.display()));
    }
    // A socket or block device is never replaced; a pipe or /dev/null is streamed into.
    baton::files::output_target(path)
        .map(|_| ())
        .map_err(|e| miette!("cannot write {}: {e}", path.display()))
}

/// `folder` (the output's folder, or the nearest existing one above it) must be a folder that
/// is not read-only.
fn check_folder(path: &Path, folder: &Path) -> Result<()> {
    let meta = std::fs::metadata(folder).map_err(|e| {
        miette!(
            "cannot write {}: cannot read folder {}: {e}",
            path.display(),
            folder.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(miette!(
            "cannot write {}: {} is not a folder",
            path.display(),
            folder.display()
        ));
    }
    if meta.permissions().readonly() {
        return Err(miette!(
            "cannot write {}: folder {} is read-only",
            path.display(),
            folder.display()
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

    #[test]
    fn a_new_folder_is_checked_above_and_made_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("lib/mood/tense.safetensors");
        let folder = check_output_in_new_folder(&out).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        folder.create().unwrap();
        assert!(dir.path().join("lib/mood").is_dir());
        // an existing folder needs nothing
        check_output_in_new_folder(&out).unwrap().create().unwrap();
        // a file in the way is still refused
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = check_output_in_new_folder(&file.join("x/b.st"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a folder"), "{err}");
    }
}
