package examples

import (
	"os"
	"testing"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

func TestMain(m *testing.M) {
	exportertest.SkipUnderShort("the deployment kit against real tools")
	os.Exit(m.Run())
}
