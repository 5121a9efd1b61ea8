package governor

import (
	"fmt"
	"math"

	"golang.org/x/sys/unix"
)

// sysinfoTotalRAM is the physical memory fallback when /proc/meminfo is
// unusable (e.g. a chroot without /proc).
func sysinfoTotalRAM() (int64, error) {
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	total, unit := uint64(info.Totalram), uint64(info.Unit)
	if unit == 0 {
		unit = 1
	}
	if total > math.MaxInt64/unit {
		return math.MaxInt64, nil
	}
	return int64(total * unit), nil
}
