//! The pause image: a container that holds a task's shared PID/IPC namespaces and does
//! nothing else, as the ECS agent's pause container. It is made on the host without a
//! registry, from a static executable of a few machine instructions (wait for a signal,
//! forever) packed into a one-file image.

/// The image's reference (the tag moves with berth's version).
pub const PAUSE_IMAGE: &str = concat!("berth/pause:", env!("CARGO_PKG_VERSION"));
/// Where the executable is in the image.
pub const PAUSE_PATH: &str = "/pause";

const BASE: u64 = 0x40_0000;
const HEADERS: usize = 64 + 56;

/// A minimal static ELF64 executable for the machine, or `None` for an architecture berth
/// has no pause program for. The program loops on a blocking system call; as PID 1 of its
/// namespace it ignores SIGTERM, so it is stopped with SIGKILL.
pub fn executable(arch: &str) -> Option<Vec<u8>> {
    let (machine, code): (u16, Vec<u8>) = match arch {
        // loop: mov eax, 34 (pause); syscall; jmp loop
        "x86_64" | "X86_64" | "amd64" => (0x3e, vec![0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7]),
        // loop: x0..x3 = 0; x8 = 73 (ppoll); svc 0; b loop
        "aarch64" | "ARM64" | "arm64" => {
            let words: [u32; 7] = [
                0xd280_0000,
                0xd280_0001,
                0xd280_0002,
                0xd280_0003,
                0xd280_0928,
                0xd400_0001,
                0x17ff_fffa,
            ];
            (0xb7, words.iter().flat_map(|w| w.to_le_bytes()).collect())
        }
        _ => return None,
    };
    let size = (HEADERS + code.len()) as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // ELF header.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    elf.extend_from_slice(&(BASE + HEADERS as u64).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers at
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // header size
    elf.extend_from_slice(&56u16.to_le_bytes()); // program header size
    elf.extend_from_slice(&1u16.to_le_bytes()); // one program header
    elf.extend_from_slice(&[0; 6]); // section header size, count, names index
                                    // One loadable, executable segment: the whole file.
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R + X
    elf.extend_from_slice(&0u64.to_le_bytes()); // offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // paddr
    elf.extend_from_slice(&size.to_le_bytes()); // file size
    elf.extend_from_slice(&size.to_le_bytes()); // memory size
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // alignment
    debug_assert_eq!(elf.len(), HEADERS);
    elf.extend_from_slice(&code);
    Some(elf)
}

/// A tar archive holding one executable file at `name` (for `docker import`).
pub fn tar_with_executable(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    let field = |header: &mut [u8; 512], at: usize, value: &[u8]| {
        header[at..at + value.len()].copy_from_slice(value);
    };
    field(&mut header, 0, name.as_bytes());
    field(&mut header, 100, b"0000755\0");
    field(&mut header, 108, b"0000000\0");
    field(&mut header, 116, b"0000000\0");
    field(
        &mut header,
        124,
        format!("{:011o}\0", content.len()).as_bytes(),
    );
    field(&mut header, 136, b"00000000000\0");
    field(&mut header, 148, b"        ");
    header[156] = b'0';
    field(&mut header, 257, b"ustar\0");
    field(&mut header, 263, b"00");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    field(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_elf_for_known_machines_only() {
        for arch in ["x86_64", "aarch64"] {
            let elf = executable(arch).unwrap();
            assert_eq!(&elf[..4], b"\x7fELF");
            let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
            assert_eq!(entry, BASE + HEADERS as u64);
            let filesz = u64::from_le_bytes(elf[96..104].try_into().unwrap());
            assert_eq!(filesz, elf.len() as u64);
        }
        assert!(executable("riscv64").is_none());
    }

    #[test]
    fn tar_has_one_file_and_a_valid_checksum() {
        let tar = tar_with_executable("pause", b"abc");
        assert_eq!(tar.len(), 512 + 512 + 1024);
        assert_eq!(&tar[0..5], b"pause");
        assert_eq!(&tar[124..136], b"00000000003\0");
        let mut header = tar[..512].to_vec();
        let stored = String::from_utf8(header[148..154].to_vec()).unwrap();
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        assert_eq!(u32::from_str_radix(&stored, 8).unwrap(), sum);
        assert_eq!(&tar[512..515], b"abc");
    }

    /// Runs the host's pause program for real (when it is Linux on a known machine): it
    /// keeps running until killed.
    #[test]
    fn the_pause_program_runs_until_killed() {
        let Some(elf) = executable(std::env::consts::ARCH) else {
            return;
        };
        if std::env::consts::OS != "linux" {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, elf).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "pause exited");
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
    }
}
