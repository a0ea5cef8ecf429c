package leader

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseStateRealFiles(t *testing.T) {
	tests := []struct {
		file   string
		name   string
		scope  string
		root   string
		leader int
		mono   uint64
	}{
		{"machined-252/hm", "hm", "lab-hm.scope", "/srv/rootfs/bb", 29373, 860772835},
		{"machined-252/inner", "inner", "machine-inner.scope", "/var/lib/machines/inner", 40, 577468806},
		{"machined-257/inner", "inner", "machine-inner.scope", "/var/lib/machines/inner", 131, 4596874717},
	}
	for _, tt := range tests {
		data, err := os.ReadFile(filepath.Join("..", "testdata", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		st, err := ParseState(data)
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if st.Name != tt.name || st.Scope != tt.scope || st.Root != tt.root || st.Leader != tt.leader ||
			st.Monotonic != tt.mono || st.Service != "systemd-nspawn" || st.Class != "container" || len(st.ID) != 32 {
			t.Errorf("%s: parsed %+v", tt.file, st)
		}
		if st.LeaderPidfdID != 0 || len(st.Extra) != 0 {
			t.Errorf("%s: unexpected keys %+v", tt.file, st)
		}
	}
}

func TestParseStateNewerKeys(t *testing.T) {
	data := "# This is private data. Do not parse.\nNAME=x\nUID=0\nSCOPE=machine-x.scope\nROOT=\"/srv/with space/\\$x\"\n" +
		"LEADER=77\nLEADER_PIDFDID=123456\nSUPERVISOR=70\nSUPERVISOR_PIDFDID=99\nVSOCK_CID=4294967295\n"
	st, err := ParseState([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != 77 || st.LeaderPidfdID != 123456 || st.Root != "/srv/with space/$x" ||
		st.Extra["SUPERVISOR"] != "70" || st.Extra["UID"] != "0" || st.Extra["VSOCK_CID"] != "4294967295" {
		t.Errorf("parsed %+v", st)
	}
}

func TestParseStateRejects(t *testing.T) {
	bad := map[string]string{
		"no leader":        "NAME=x\n",
		"leader not int":   "LEADER=abc\n",
		"leader zero":      "LEADER=0\n",
		"leader negative":  "LEADER=-4\n",
		"leader too big":   "LEADER=99999999999\n",
		"duplicate":        "LEADER=1\nLEADER=2\n",
		"no equals":        "LEADER=1\nGARBAGE\n",
		"lowercase key":    "LEADER=1\nname=x\n",
		"open quote":       "LEADER=1\nROOT=\"/srv\n",
		"stray quote":      "LEADER=1\nROOT=/s\"rv\n",
		"bad escape":       "LEADER=1\nROOT=\"\\n\"\n",
		"mono not int":     "LEADER=1\nMONOTONIC=x\n",
		"pidfdid negative": "LEADER=1\nLEADER_PIDFDID=-1\n",
		"too large":        "LEADER=1\n#" + strings.Repeat("x", MaxStateSize) + "\n",
	}
	for name, data := range bad {
		if _, err := ParseState([]byte(data)); !errors.Is(err, ErrBadState) {
			t.Errorf("%s: ParseState(%q) = %v, want ErrBadState", name, data, err)
		}
	}
}

func FuzzParseState(f *testing.F) {
	for _, file := range []string{"machined-252/hm", "machined-252/inner", "machined-257/inner"} {
		data, err := os.ReadFile(filepath.Join("..", "testdata", file))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("LEADER=1\nROOT=\"a\\\"b\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseState(data)
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error %v does not wrap ErrBadState", err)
			}
			return
		}
		if st.Leader < 1 {
			t.Fatalf("accepted leader %d", st.Leader)
		}
	})
}
