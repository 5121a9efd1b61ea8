//go:build race

package vinequeue

// raceBuild: the race detector cannot see stores made by assembly, so race
// builds push through Go code only (see Enqueue).
const raceBuild = true
