//go:build !linux

package governor

import "errors"

// sysinfoTotalRAM: cgroups and sysinfo(2) are Linux only; elsewhere the
// limit is Options.Limit, GOMEMLIMIT or (if the tree has one) /proc/meminfo.
func sysinfoTotalRAM() (int64, error) {
	return 0, errors.New("sysinfo: not supported on this OS")
}
