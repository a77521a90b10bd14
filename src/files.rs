//! Output files, the one way baton writes them: atomically (temp file + rename), and the small
//! safetensors helpers (f32/i64 tensors with string metadata) behind the features, bundle,
//! classifier and codes files; plus the path helpers every stage shares ([`folder_of`],
//! [`stamp`], [`content_hash`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// The folder holding `path`: its parent, or `.` for a bare file name.
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A file's size and modification time, how baton tells that a file changed since it last
/// looked (`None` when it cannot be read, e.g. deleted).
pub fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// A hash of a file's bytes (`None` when it cannot be read, e.g. deleted): FNV-1a, which is
/// the same in every build, so a hash written to a file (a sweep's settings) can be compared
/// by a later baton.
pub fn content_hash(path: &Path) -> Option<u64> {
    Some(bytes_hash(&std::fs::read(path).ok()?))
}

/// [`content_hash`] of bytes in memory.
pub fn bytes_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Errors reading or writing baton's safetensors-based files.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a safetensors file (or could not be serialised as one).
    #[error("{path} is not a valid safetensors file: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors crate reported.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A valid safetensors file whose contents break the baton format (tag, tensors, metadata).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The atomic write failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl FormatError {
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        FormatError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// A tensor to write: name, dtype, shape and little-endian bytes.
pub struct OwnedTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl OwnedTensor {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, data: &[f32]) -> Self {
        OwnedTensor {
            name: name.into(),
            dtype: Dtype::F32,
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    pub fn i64(name: impl Into<String>, shape: Vec<usize>, data: &[i64]) -> Self {
        OwnedTensor {
            name: name.into(),
            dtype: Dtype::I64,
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// How an output path is written, from what it names now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputTarget {
    /// Nothing yet, or a regular file: written beside it and renamed over it.
    File,
    /// A pipe or a character device (`/dev/null`, a FIFO a player reads): streamed into, since
    /// renaming over it would replace the special file with an ordinary one.
    Stream,
}

/// How `path` can be written (see [`OutputTarget`]); an error for a folder, a socket or a block
/// device, which baton never replaces. A symbolic link is judged by what it points to.
pub fn output_target(path: &Path) -> std::io::Result<OutputTarget> {
    let Ok(meta) = std::fs::metadata(path) else {
        // Nothing there (or nothing baton can look at): the write itself says what is wrong.
        return Ok(OutputTarget::File);
    };
    if meta.is_file() {
        return Ok(OutputTarget::File);
    }
    if meta.is_dir() {
        return Err(std::io::Error::other("it is a folder"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let kind = meta.file_type();
        if kind.is_fifo() || kind.is_char_device() {
            return Ok(OutputTarget::Stream);
        }
    }
    Err(std::io::Error::other(
        "it is not a regular file, a pipe or a character device, and baton replaces nothing else",
    ))
}

/// Files that exist only until the run finishes with them.
struct InFlight(std::sync::Mutex<Vec<PathBuf>>);

impl InFlight {
    const fn new() -> Self {
        InFlight(std::sync::Mutex::new(Vec::new()))
    }

    fn track(&self, path: &Path) {
        if let Ok(mut files) = self.0.lock() {
            files.push(path.to_path_buf());
        }
    }

    fn untrack(&self, path: &Path) {
        if let Ok(mut files) = self.0.lock() {
            if let Some(i) = files.iter().rposition(|p| p == path) {
                files.swap_remove(i);
            }
        }
    }

    fn remove_all(&self) -> usize {
        let files = match self.0.lock() {
            Ok(mut files) => std::mem::take(&mut *files),
            Err(_) => return 0,
        };
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        files.len()
    }
}

/// Temporary and staged files being written now: what an interrupted run must not leave behind.
static IN_FLIGHT: InFlight = InFlight::new();

/// Marks `path` as a file that exists only until this run finishes with it (a temporary or
/// staged output): [`remove_in_flight`] deletes it if the run is interrupted first.
pub fn track_in_flight(path: &Path) {
    IN_FLIGHT.track(path);
}

/// `path` is finished with (renamed into place or deleted): no longer removed on interrupt.
pub fn untrack_in_flight(path: &Path) {
    IN_FLIGHT.untrack(path);
}

/// Deletes every file still marked by [`track_in_flight`] (what the Ctrl-C handler calls before
/// the process exits); returns how many there were.
pub fn remove_in_flight() -> usize {
    IN_FLIGHT.remove_all()
}

/// Deletes `path` if it is there: a file already gone (perhaps removed by a sibling shard at the
/// same moment) is not an error.
pub fn remove_file_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename: readers see either the
/// old file or the complete new one, never a partial write (an interrupted run leaves no
/// truncated output, and no temporary file once [`remove_in_flight`] has run). A pipe or a
/// character device is streamed into instead ([`OutputTarget::Stream`]); a folder, socket or
/// block device is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if output_target(path)? == OutputTarget::Stream {
        return stream_into(path, bytes);
    }
    write_through_temp(path, bytes, |tmp| std::fs::rename(tmp, path))
}

/// Writes `bytes` to `path` like [`write_atomic`], but only if nothing is there yet: returns
/// `false`, writing nothing, when `path` exists. The check and the write are one step (a hard
/// link, which refuses an existing name), so of processes racing to create the same file
/// exactly one does: how shards sharing a folder agree on the one record of its options.
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let mut created = true;
    write_through_temp(path, bytes, |tmp| match std::fs::hard_link(tmp, path) {
        Ok(()) => std::fs::remove_file(tmp),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            created = false;
            std::fs::remove_file(tmp)
        }
        // A file system without hard links: a check, then the rename (racy only there).
        Err(_) if !path.exists() => std::fs::rename(tmp, path),
        Err(_) => {
            created = false;
            std::fs::remove_file(tmp)
        }
    })?;
    Ok(created)
}

/// The file a temporary sibling of baton's atomic writes stands for: `Some("x.wav")` for
/// `.x.wav.1234-00ab12cd34ef5678.tmp` (and for `.x.wav.1234.tmp`, as earlier versions named
/// them), `None` for any other name. Lets a folder's readers skip writes in flight (another
/// process's, in a folder shards share) and resumes clear away their own stale ones.
pub fn temp_target(file_name: &str) -> Option<&str> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (target, token) = inner.rsplit_once('.')?;
    let (pid, nonce) = token.split_once('-').unwrap_or((token, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let nonce_ok =
        nonce.is_empty() || (nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    (!target.is_empty() && digits(pid) && nonce_ok).then_some(target)
}

/// Writes `bytes` to a temporary sibling of `path` ([`create_temp_sibling`]), synced, then lets
/// `finish` put it in place; the temporary file is removed on failure and tracked for
/// [`remove_in_flight`] meanwhile.
fn write_through_temp(
    path: &Path,
    bytes: &[u8],
    finish: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let (tmp, mut f) = create_temp_sibling(path)?;
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        finish(&tmp)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    untrack_in_flight(&tmp);
    result
}

/// Creates the new, empty temporary file that `path` is written through, tracked for
/// [`remove_in_flight`]: `.NAME.PID-NONCE.tmp` in the same folder (so the rename into place
/// stays on one file system), NONCE 16 random hex digits. The PID alone is not unique where
/// shards on several machines share a folder (every container's first process is PID 1), and
/// the file is created only if no such name exists, so two writers never share one.
pub fn create_temp_sibling(path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::hash::{BuildHasher, Hasher};
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file path"))?;
    let mut attempts = 0;
    loop {
        // std's hasher keys are drawn from the OS's random source (once per thread) and advance
        // with each `RandomState`, so each call gets fresh bits without another dependency.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(
            ".{}-{:016x}.tmp",
            std::process::id(),
            hasher.finish()
        ));
        let tmp = dir.join(tmp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => {
                track_in_flight(&tmp);
                return Ok((tmp, f));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes `bytes` into a pipe or character device that is already there ([`OutputTarget::Stream`]).
fn stream_into(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(bytes).and_then(|()| f.flush())
}

/// Puts a finished file `from` (a staged render) in place of `to`: a rename for a regular file,
/// a copy into a pipe or a character device (then `from` is deleted), an error for anything else.
pub fn move_into_place(from: &Path, to: &Path) -> std::io::Result<()> {
    let result = match output_target(to)? {
        OutputTarget::File => std::fs::rename(from, to),
        OutputTarget::Stream => std::fs::read(from)
            .and_then(|bytes| stream_into(to, &bytes))
            .and_then(|()| std::fs::remove_file(from)),
    };
    if result.is_ok() {
        untrack_in_flight(from);
    }
    result
}

/// Serialises tensors with metadata and writes them atomically.
pub fn write(
    path: &Path,
    tensors: &[OwnedTensor],
    metadata: HashMap<String, String>,
) -> Result<(), FormatError> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|source| FormatError::Safetensors {
                    path: path.to_path_buf(),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|source| {
        FormatError::Safetensors {
            path: path.to_path_buf(),
            source,
        }
    })?;
    write_atomic(path, &bytes).map_err(|source| FormatError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A map keyed by block index as the JSON object [`Reader::meta_blocks`] reads.
pub fn blocks_json<T: serde::Serialize>(blocks: &BTreeMap<usize, T>) -> String {
    let by_name: BTreeMap<String, &T> = blocks.iter().map(|(l, v)| (l.to_string(), v)).collect();
    serde_json::to_string(&by_name).unwrap_or_else(|_| "{}".into())
}

/// A whole file read into memory, with its metadata checked against an expected format tag.
pub struct Reader {
    pub path: PathBuf,
    bytes: Vec<u8>,
    pub metadata: HashMap<String, String>,
}

impl Reader {
    /// Reads `path` and checks that metadata `baton.format` equals `format`.
    pub fn open(path: &Path, format: &str) -> Result<Self, FormatError> {
        let bytes = std::fs::read(path).map_err(|source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|source| FormatError::Safetensors {
                path: path.to_path_buf(),
                source,
            })?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        match metadata.get("baton.format") {
            Some(f) if f == format => {}
            Some(f) => {
                return Err(FormatError::invalid(
                    path,
                    format!("holds a `{f}` file, expected `{format}`"),
                ))
            }
            None => {
                return Err(FormatError::invalid(
                    path,
                    format!("has no `baton.format` metadata (expected `{format}`)"),
                ))
            }
        }
        Ok(Reader {
            path: path.to_path_buf(),
            bytes,
            metadata,
        })
    }

    fn tensors(&self) -> Result<SafeTensors<'_>, FormatError> {
        SafeTensors::deserialize(&self.bytes).map_err(|source| FormatError::Safetensors {
            path: self.path.clone(),
            source,
        })
    }

    /// Names of all tensors in the file.
    pub fn names(&self) -> Result<Vec<String>, FormatError> {
        Ok(self
            .tensors()?
            .names()
            .into_iter()
            .map(str::to_string)
            .collect())
    }

    /// A required metadata string.
    pub fn meta(&self, key: &str) -> Result<&str, FormatError> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| FormatError::invalid(&self.path, format!("missing metadata `{key}`")))
    }

    /// A metadata string parsed as JSON.
    pub fn meta_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, FormatError> {
        serde_json::from_str(self.meta(key)?).map_err(|e| {
            FormatError::invalid(&self.path, format!("metadata `{key}` is not valid: {e}"))
        })
    }

    /// A metadata JSON object keyed by block index (`{"0": 0.91, ...}`), such as a bundle's
    /// `scores`; an empty map when `optional` and the key is absent.
    pub fn meta_blocks<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        optional: bool,
    ) -> Result<BTreeMap<usize, T>, FormatError> {
        if optional && !self.metadata.contains_key(key) {
            return Ok(BTreeMap::new());
        }
        let by_name: BTreeMap<String, T> = self.meta_json(key)?;
        by_name
            .into_iter()
            .map(|(k, v)| {
                let l = k.parse::<usize>().map_err(|_| {
                    FormatError::invalid(
                        &self.path,
                        format!("{key} key `{k}` is not a block index"),
                    )
                })?;
                Ok((l, v))
            })
            .collect()
    }

    /// A tensor's dtype, shape and raw bytes.
    pub fn raw(&self, name: &str) -> Result<(Dtype, Vec<usize>, Vec<u8>), FormatError> {
        let st = self.tensors()?;
        let view = st
            .tensor(name)
            .map_err(|_| FormatError::invalid(&self.path, format!("missing tensor `{name}`")))?;
        Ok((view.dtype(), view.shape().to_vec(), view.data().to_vec()))
    }

    /// A tensor that must be f32; returns (shape, values).
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FormatError> {
        let (dtype, shape, bytes) = self.raw(name)?;
        if dtype != Dtype::F32 {
            return Err(FormatError::invalid(
                &self.path,
                format!("tensor `{name}` is {dtype:?}, expected F32"),
            ));
        }
        let values = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((shape, values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn special_files_are_streamed_into_or_refused_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        // /dev/null: streamed into, and still the device afterwards.
        write_atomic(Path::new("/dev/null"), b"abc").unwrap();
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
        // /dev/full: the device's own error, not a rename over it.
        if Path::new("/dev/full").exists() {
            let err = write_atomic(Path::new("/dev/full"), b"abc").unwrap_err();
            assert!(!std::fs::metadata("/dev/full").unwrap().is_file(), "{err}");
        }
        // A folder and a socket are refused and stay what they were.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(write_atomic(&sub, b"x").is_err());
        assert!(sub.is_dir());
        let sock = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = write_atomic(&sock, b"x").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(!std::fs::metadata(&sock).unwrap().is_file());
        // Nothing else was left in the folder.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn write_new_creates_once_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dataset.json");
        assert!(write_new(&path, b"first").unwrap());
        assert!(!write_new(&path, b"second").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        // no temporary file is left either way
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temp_names_are_recognised_with_the_file_they_stand_for() {
        assert_eq!(temp_target(".x.wav.1234.tmp"), Some("x.wav"));
        assert_eq!(temp_target(".sweep.json.7.tmp"), Some("sweep.json"));
        assert_eq!(temp_target(".x.wav.1-00ab12cd34ef5678.tmp"), Some("x.wav"));
        for other in [
            "x.wav",
            ".x.wav.tmp",
            ".x.wav.12a.tmp",
            "..1.tmp",
            ".hidden",
            ".x.wav.1-00ab12cd.tmp",
            ".x.wav.-00ab12cd34ef5678.tmp",
            ".x.wav.1-00ab12cd34ef567g.tmp",
            ".config.backup.tmp",
        ] {
            assert_eq!(temp_target(other), None, "{other}");
        }
    }

    #[test]
    fn temporary_siblings_are_new_files_with_names_readers_recognise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.json");
        let (a, _fa) = create_temp_sibling(&path).unwrap();
        let (b, _fb) = create_temp_sibling(&path).unwrap();
        // Two writers of one file in one process (or two machines' processes with one PID)
        // never share a temporary file.
        assert_ne!(a, b);
        for t in [&a, &b] {
            let name = t.file_name().unwrap().to_str().unwrap();
            assert_eq!(temp_target(name), Some("sweep.json"), "{name}");
            untrack_in_flight(t);
        }
        // what the writers leave is the file alone
        write_atomic(&path, b"{}").unwrap();
        std::fs::remove_file(&a).unwrap();
        std::fs::remove_file(&b).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn interrupted_writes_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        // A registry of its own: the global one belongs to the other tests' writes.
        let in_flight = InFlight::new();
        let staged = dir.path().join(".x.wav.1234.tmp");
        std::fs::write(&staged, b"half").unwrap();
        in_flight.track(&staged);
        let done = dir.path().join("done.tmp");
        std::fs::write(&done, b"kept").unwrap();
        in_flight.track(&done);
        in_flight.untrack(&done);
        assert_eq!(in_flight.remove_all(), 1);
        assert!(!staged.exists());
        assert!(done.exists());
    }
}
