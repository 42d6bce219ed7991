package keyref

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Ref
		wantErr bool
	}{
		{in: "3a6a031d-7b2c-4c1e-9e1a-0123456789ab", want: Ref{ID: "3a6a031d-7b2c-4c1e-9e1a-0123456789ab"}},
		{in: "key-hzz63a1b2c3d4e5f6g7h8", want: Ref{ID: "key-hzz63a1b2c3d4e5f6g7h8"}},
		{in: "alias/rekey-main", want: Ref{Alias: "alias/rekey-main"}},
		{in: "alias/team/k8s_secrets", want: Ref{Alias: "alias/team/k8s_secrets"}},
		{in: "acs:kms:cn-hangzhou:5068000000000001:key/key-abc", want: Ref{ID: "key-abc", Region: "cn-hangzhou", Account: "5068000000000001"}},
		{in: "acs:kms:cn-hangzhou:5068000000000001:alias/rekey", want: Ref{Alias: "alias/rekey", Region: "cn-hangzhou", Account: "5068000000000001"}},
		{in: "", wantErr: true},
		{in: "alias/", wantErr: true},
		{in: "alias/has space", wantErr: true},
		{in: "key id", wantErr: true},
		{in: " key-abc", wantErr: true},
		{in: "acs:ecs:cn-hangzhou:1:key/k", wantErr: true},
		{in: "acs:kms:cn-hangzhou:12a:key/k", wantErr: true},
		{in: "acs:kms:Hangzhou:1:key/k", wantErr: true},
		{in: "acs:kms:cn-hangzhou:1:secret/k", wantErr: true},
		{in: "acs:kms:cn-hangzhou:1:key/", wantErr: true},
		{in: "acs:kms:cn-hangzhou:1", wantErr: true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("Parse(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			continue
		}
		if got != tc.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestSameAndResolve(t *testing.T) {
	id := Ref{ID: "key-1"}
	arn := Ref{ID: "key-1", Region: "cn-hangzhou", Account: "1"}
	alias := Ref{Alias: "alias/main"}
	aliases := map[string]string{"alias/main": "key-1"}
	if !id.Same(arn, nil) {
		t.Error("ID and ARN of the same key must be the same")
	}
	if id.Same(alias, nil) {
		t.Error("an alias must not match an ID without an alias map")
	}
	if !id.Same(alias, aliases) || !alias.Same(arn, aliases) {
		t.Error("an alias mapped to the ID must match it")
	}
	if (Ref{ID: "key-2"}).Same(alias, aliases) {
		t.Error("an alias mapped to another key must not match")
	}
	if got := alias.String(); got != "alias/main" {
		t.Errorf("String = %q", got)
	}
	if !arn.IsARN() || id.IsARN() {
		t.Error("IsARN wrong")
	}
}
