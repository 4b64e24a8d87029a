// Package swanctl reads strongSwan's swanctl.conf (the syntax of
// strongSwan 5.9.8's settings files and the semantics of its swanctl and
// vici configuration loader) into an ike/config.Config, so that a
// strongSwan user's connections, children, secrets and authorities carry
// over to ipsecstack.
//
// What ipsecstack does not implement is rejected with "file:line: what"
// and the option's name, never ignored: unknown options, IKEv1, MOBIKE,
// virtual IPs and pools, EAP and XAuth, multiple authentication rounds,
// marks, interface IDs, updown scripts, IPComp, AH, hardware offload,
// reauthentication, raw public keys, PKCS#11, and algorithms without an
// implementation here. Options that strongSwan knows and that ipsecstack
// does not implement are accepted only with the value that asks for
// nothing (mobike = no, ipcomp = no, hw_offload = no, copy_df = yes, ...).
//
// Defaults are swanctl.conf(5)'s as charon's vici plugin applies them
// (src/libcharon/plugins/vici/vici_config.c): IKE rekeying every 4h with
// over_time 10% and rand_time min(over_time, rekey_time/2); CHILD SA
// rekeying every 1h, life_time rekey_time + 10%, rand_time the difference;
// ports 500; auth = pubkey; dynamic traffic selectors; strongSwan's
// default proposals (defaults.go, with what ipsecstack lacks left out).
//
// local_addrs and remote_addrs take addresses, subnets and %any; hostnames
// are rejected (ipsecstack does not resolve them), as are address ranges.
// Private keys are read unencrypted only; a key file that needs a
// passphrase is an error.
package swanctl
