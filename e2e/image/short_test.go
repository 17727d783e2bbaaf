package image

import (
	"os"
	"testing"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

func TestMain(m *testing.M) {
	exportertest.SkipUnderShort("end-to-end tests of the container image")
	os.Exit(m.Run())
}
