//go:build budget

package budget

import (
	"os"
	"testing"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

func TestMain(m *testing.M) {
	exportertest.SkipUnderShort("the memory budget of the built binaries")
	os.Exit(m.Run())
}
