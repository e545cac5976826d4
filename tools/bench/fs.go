package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// fsInfo describes the file system the output trees are written to, which
// decides much of what extracting 9000 files costs.
type fsInfo struct {
	Type    string `json:"type"`              // "ext4", "xfs", "tmpfs", ... or a magic number
	Device  string `json:"device,omitempty"`  // block device name, e.g. "vda"
	Journal *bool  `json:"journal,omitempty"` // ext4 only
	Note    string `json:"note,omitempty"`
}

var fsTypes = map[int64]string{
	unix.EXT4_SUPER_MAGIC:      "ext4",
	unix.XFS_SUPER_MAGIC:       "xfs",
	unix.BTRFS_SUPER_MAGIC:     "btrfs",
	unix.TMPFS_MAGIC:           "tmpfs",
	unix.OVERLAYFS_SUPER_MAGIC: "overlayfs",
}

// noJournalNote explains a figure that would otherwise mislead: ext4
// without a journal does not reuse an inode freed in the last minutes
// (recently_deleted in fs/ext4/ialloc.c), and finding a free one means
// scanning past every such inode, for every file created. Benchmarks and
// tests that delete trees all the time make creating files there several
// times dearer in kernel time, for every case alike.
const noJournalNote = "ext4 without a journal: creating files soon after others were deleted costs several times more kernel time " +
	"(ext4 skips recently freed inodes), the same for every case, which pulls ratios towards 1; " +
	"compare with -keep-outputs, or -dir on a journaled file system"

func describeFS(dir string) fsInfo {
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		return fsInfo{Type: "unknown"}
	}
	info := fsInfo{Type: fsTypes[int64(sfs.Type)]}
	if info.Type == "" {
		info.Type = fmt.Sprintf("%#x", sfs.Type)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return info
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	if target, err := os.Readlink(filepath.Join("/sys/dev/block", dev)); err == nil {
		info.Device = filepath.Base(target)
	}
	if info.Type == "ext4" && info.Device != "" {
		if data, err := os.ReadFile(filepath.Join("/sys/fs/ext4", info.Device, "journal_task")); err == nil {
			journal := strings.TrimSpace(string(data)) != "<none>"
			info.Journal = &journal
			if !journal {
				info.Note = noJournalNote
			}
		}
	}
	return info
}

func (f fsInfo) String() string {
	s := f.Type
	if f.Device != "" {
		s += " on " + f.Device
	}
	if f.Journal != nil && !*f.Journal {
		s += ", no journal"
	}
	return s
}
