//go:build !linux

package residency

import "errors"

// ReleaseStartup is Linux's: elsewhere it does nothing and says so.
func ReleaseStartup() (Released, error) {
	return Released{}, errors.ErrUnsupported
}
