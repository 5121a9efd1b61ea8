//go:build !race

package vinequeue

const raceBuild = false
