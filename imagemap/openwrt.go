package imagemap

import (
	"strings"
	"sync"
)

// builtinDevice is one device of the built-in table: its OpenWrt device
// (profile) name, its model strings and its board names.
type builtinDevice struct {
	profile string
	models  []string
	names   []string
}

// builtinGroup is a set of devices of one target whose image types share
// the same suffixes.
type builtinGroup struct {
	target   string // OpenWrt target/subtarget
	suffixes []string
	devices  []builtinDevice
}

func dv(profile string, models []string, names ...string) builtinDevice {
	return builtinDevice{profile: profile, models: models, names: names}
}

func ms(models ...string) []string { return models }

var (
	sqSysupgrade = []string{"squashfs-sysupgrade.bin"}
	sqITB        = []string{"squashfs-sysupgrade.itb"}
	rpiImages    = []string{"squashfs-sysupgrade.img.gz", "ext4-sysupgrade.img.gz"}
)

// builtin is the table behind OpenWrt. It was written for this package from
// public OpenWrt device facts (target image definitions and device-tree
// model/compatible strings). Image types are
// <target with '/' as '-'>-<profile>-<suffix>.
var builtin = []builtinGroup{
	{"ath79/generic", sqSysupgrade, []builtinDevice{
		dv("8dev_carambola2", ms("8devices Carambola2"), "8dev,carambola2"),
		dv("dlink_dir-825-b1", ms("D-Link DIR-825 rev. B1"), "dlink,dir-825-b1"),
		dv("glinet_gl-ar150", ms("GL.iNet GL-AR150"), "glinet,gl-ar150"),
		dv("glinet_gl-ar300m-nor", ms("GL.iNet GL-AR300M (NOR)"), "glinet,gl-ar300m-nor"),
		dv("glinet_gl-ar750", ms("GL.iNet GL-AR750"), "glinet,gl-ar750"),
		dv("glinet_gl-x750", ms("GL.iNet GL-X750"), "glinet,gl-x750"),
		dv("librerouter_librerouter-v1", ms("LibreRouter v1"), "librerouter,librerouter-v1"),
		dv("netgear_wndr3700-v2", ms("Netgear WNDR3700 v2"), "netgear,wndr3700-v2"),
		dv("netgear_wndr3800", ms("Netgear WNDR3800"), "netgear,wndr3800"),
		dv("openmesh_om5p-ac-v2", ms("OpenMesh OM5P-AC v2"), "openmesh,om5p-ac-v2"),
		dv("tplink_archer-a7-v5", ms("TP-Link Archer A7 v5"), "tplink,archer-a7-v5"),
		dv("tplink_archer-c5-v1", ms("TP-Link Archer C5 v1"), "tplink,archer-c5-v1"),
		dv("tplink_archer-c6-v2", ms("TP-Link Archer C6 v2 (EU/RU/JP)"), "tplink,archer-c6-v2"),
		dv("tplink_archer-c60-v2", ms("TP-Link Archer C60 v2"), "tplink,archer-c60-v2"),
		dv("tplink_archer-c7-v2", ms("TP-Link Archer C7 v2"), "tplink,archer-c7-v2"),
		dv("tplink_archer-c7-v4", ms("TP-Link Archer C7 v4"), "tplink,archer-c7-v4"),
		dv("tplink_archer-c7-v5", ms("TP-Link Archer C7 v5"), "tplink,archer-c7-v5"),
		dv("tplink_cpe510-v1", ms("TP-Link CPE510 v1"), "tplink,cpe510-v1"),
		dv("tplink_eap225-v3", ms("TP-Link EAP225 v3"), "tplink,eap225-v3"),
		dv("tplink_eap245-v3", ms("TP-Link EAP245 v3"), "tplink,eap245-v3"),
		dv("tplink_tl-wdr3600-v1", ms("TP-Link TL-WDR3600 v1"), "tplink,tl-wdr3600-v1"),
		dv("tplink_tl-wdr4300-v1", ms("TP-Link TL-WDR4300 v1"), "tplink,tl-wdr4300-v1"),
		dv("tplink_tl-wr1043n-v5", ms("TP-Link TL-WR1043N v5"), "tplink,tl-wr1043n-v5"),
		dv("tplink_tl-wr1043nd-v2", ms("TP-Link TL-WR1043ND v2"), "tplink,tl-wr1043nd-v2"),
		dv("tplink_tl-wr1043nd-v3", ms("TP-Link TL-WR1043ND v3"), "tplink,tl-wr1043nd-v3"),
		dv("tplink_tl-wr1043nd-v4", ms("TP-Link TL-WR1043ND v4"), "tplink,tl-wr1043nd-v4"),
		dv("ubnt_litebeam-ac-gen2", ms("Ubiquiti LiteBeam AC Gen2"), "ubnt,litebeam-ac-gen2"),
		dv("ubnt_nanostation-ac", ms("Ubiquiti NanoStation AC"), "ubnt,nanostation-ac"),
		dv("ubnt_nanostation-ac-loco", ms("Ubiquiti NanoStation AC loco"), "ubnt,nanostation-ac-loco"),
		dv("ubnt_nanostation-m-xw", ms("Ubiquiti Nanostation M (XW)"), "ubnt,nanostation-m-xw"),
		dv("ubnt_unifi", ms("Ubiquiti UniFi"), "ubnt,unifi"),
		dv("ubnt_unifiac-lite", ms("Ubiquiti UniFi AC Lite"), "ubnt,unifiac-lite"),
		dv("ubnt_unifiac-lr", ms("Ubiquiti UniFi AC LR"), "ubnt,unifiac-lr"),
		dv("ubnt_unifiac-mesh", ms("Ubiquiti UniFi AC Mesh"), "ubnt,unifiac-mesh"),
		dv("ubnt_unifiac-mesh-pro", ms("Ubiquiti UniFi AC Mesh Pro"), "ubnt,unifiac-mesh-pro"),
		dv("ubnt_unifiac-pro", ms("Ubiquiti UniFi AC Pro"), "ubnt,unifiac-pro"),
	}},
	{"ath79/tiny", sqSysupgrade, []builtinDevice{
		dv("tplink_tl-wr841-v9", ms("TP-Link TL-WR841N/ND v9"), "tplink,tl-wr841-v9"),
		dv("tplink_tl-wr841-v11", ms("TP-Link TL-WR841N/ND v11"), "tplink,tl-wr841-v11"),
	}},
	{"ath79/nand", sqSysupgrade, []builtinDevice{
		dv("glinet_gl-ar750s-nor-nand", ms("GL.iNet GL-AR750S (NOR/NAND)"), "glinet,gl-ar750s-nor-nand"),
		dv("netgear_wndr4300", ms("Netgear WNDR4300"), "netgear,wndr4300"),
	}},
	// ar71xx predates device trees: its board names ("archer-c7") were
	// shared by several hardware versions, so entries match by model only.
	{"ar71xx/generic", sqSysupgrade, []builtinDevice{
		dv("archer-c7-v2", ms("TP-Link Archer C7 v2")),
		dv("archer-c7-v4", ms("TP-Link Archer C7 v4")),
		dv("archer-c7-v5", ms("TP-Link Archer C7 v5")),
		dv("gl-ar150", ms("GL.iNet GL-AR150")),
		dv("gl-ar300m", ms("GL.iNet GL-AR300M")),
		dv("om5p-ac-v2", ms("OpenMesh OM5P-AC v2")),
		dv("tl-wdr3600-v1", ms("TP-Link TL-WDR3600 v1")),
		dv("tl-wdr4300-v1", ms("TP-Link TL-WDR4300 v1")),
		dv("tl-wr1043nd-v2", ms("TP-Link TL-WR1043ND v2")),
		dv("tl-wr1043nd-v3", ms("TP-Link TL-WR1043ND v3")),
		dv("tl-wr1043nd-v4", ms("TP-Link TL-WR1043ND v4")),
		dv("ubnt-unifi", ms("Ubiquiti UniFi")),
		dv("ubnt-unifiac-lite", ms("Ubiquiti UniFi-AC-LITE")),
		dv("ubnt-unifiac-mesh", ms("Ubiquiti UniFi-AC-MESH")),
		dv("ubnt-unifiac-pro", ms("Ubiquiti UniFi-AC-PRO")),
	}},
	{"ramips/mt7621", sqSysupgrade, []builtinDevice{
		dv("asus_rt-ac85p", ms("ASUS RT-AC85P"), "asus,rt-ac85p"),
		dv("cudy_wr2100", ms("Cudy WR2100"), "cudy,wr2100"),
		dv("dlink_dir-878-a1", ms("D-Link DIR-878 A1"), "dlink,dir-878-a1"),
		dv("glinet_gl-mt1300", ms("GL.iNet GL-MT1300"), "glinet,gl-mt1300"),
		dv("linksys_ea7500-v2", ms("Linksys EA7500 v2"), "linksys,ea7500-v2"),
		dv("mikrotik_routerboard-750gr3", ms("MikroTik RouterBOARD 750Gr3"), "mikrotik,routerboard-750gr3"),
		dv("netgear_r6220", ms("Netgear R6220"), "netgear,r6220"),
		dv("tplink_archer-a6-v3", ms("TP-Link Archer A6 v3"), "tplink,archer-a6-v3"),
		dv("tplink_eap615-wall-v1", ms("TP-Link EAP615-Wall v1"), "tplink,eap615-wall-v1"),
		dv("ubnt_edgerouter-x", ms("Ubiquiti EdgeRouter X"), "ubnt,edgerouter-x"),
		dv("ubnt_edgerouter-x-sfp", ms("Ubiquiti EdgeRouter X SFP"), "ubnt,edgerouter-x-sfp"),
		dv("ubnt_unifi-6-lite", ms("Ubiquiti UniFi 6 Lite"), "ubnt,unifi-6-lite"),
		dv("ubnt_unifi-nanohd", ms("Ubiquiti UniFi nanoHD"), "ubnt,unifi-nanohd"),
		dv("xiaomi_mi-router-3g", ms("Xiaomi Mi Router 3G"), "xiaomi,mi-router-3g"),
		dv("xiaomi_mi-router-4a-gigabit", ms("Xiaomi Mi Router 4A Gigabit Edition"), "xiaomi,mi-router-4a-gigabit"),
		dv("zbtlink_zbt-wg3526-16m", ms("ZBT WG3526 (16M)"), "zbtlink,zbt-wg3526-16m"),
	}},
	{"ramips/mt76x8", sqSysupgrade, []builtinDevice{
		dv("glinet_gl-mt300n-v2", ms("GL.iNet GL-MT300N-V2"), "glinet,gl-mt300n-v2"),
		dv("onion_omega2p", ms("Onion Omega2+"), "onion,omega2p"),
		dv("tplink_archer-c50-v4", ms("TP-Link Archer C50 v4"), "tplink,archer-c50-v4"),
		dv("tplink_tl-wr841n-v13", ms("TP-Link TL-WR841N v13"), "tplink,tl-wr841n-v13"),
		dv("vocore_vocore2", ms("VoCore VoCore2"), "vocore,vocore2"),
		dv("xiaomi_mi-router-4c", ms("Xiaomi Mi Router 4C"), "xiaomi,mi-router-4c"),
	}},
	{"ramips/mt7620", sqSysupgrade, []builtinDevice{
		dv("glinet_gl-mt300a", ms("GL-inet GL-MT300A"), "glinet,gl-mt300a"),
		dv("xiaomi_miwifi-mini", ms("Xiaomi MiWiFi Mini"), "xiaomi,miwifi-mini"),
	}},
	{"mediatek/filogic", sqSysupgrade, []builtinDevice{
		dv("asus_tuf-ax4200", ms("ASUS TUF-AX4200"), "asus,tuf-ax4200"),
		dv("cudy_wr3000-v1", ms("Cudy WR3000 v1"), "cudy,wr3000-v1"),
		dv("glinet_gl-mt3000", ms("GL.iNet GL-MT3000"), "glinet,gl-mt3000"),
		dv("glinet_gl-mt6000", ms("GL.iNet GL-MT6000"), "glinet,gl-mt6000"),
		dv("xiaomi_mi-router-ax3000t", ms("Xiaomi Mi Router AX3000T"), "xiaomi,mi-router-ax3000t"),
	}},
	{"mediatek/filogic", sqITB, []builtinDevice{
		dv("bananapi_bpi-r3", ms("Bananapi BPI-R3"), "bananapi,bpi-r3"),
		dv("openwrt_one", ms("OpenWrt One"), "openwrt,one"),
	}},
	{"mediatek/mt7622", sqITB, []builtinDevice{
		dv("bananapi_bpi-r64", ms("Bananapi BPI-R64"), "bananapi,bpi-r64"),
		dv("linksys_e8450-ubi", ms("Linksys E8450 (UBI)"), "linksys,e8450-ubi"),
		dv("xiaomi_redmi-router-ax6s", ms("Xiaomi Redmi Router AX6S"), "xiaomi,redmi-router-ax6s"),
	}},
	{"mediatek/mt7622", sqSysupgrade, []builtinDevice{
		dv("ubnt_unifi-6-lr-v1", ms("Ubiquiti UniFi 6 LR v1"), "ubnt,unifi-6-lr-v1"),
	}},
	// x86 has no device tree: OpenWrt derives model and board name from
	// DMI ("<vendor> <product>", lowered and dashed for the board name), and
	// one generic image serves every PC. These are common examples.
	{"x86/64", []string{"squashfs-combined.img.gz", "squashfs-combined-efi.img.gz", "ext4-combined.img.gz", "ext4-combined-efi.img.gz"}, []builtinDevice{
		dv("generic", ms(
			"PC Engines apu2", "PC Engines apu3", "PC Engines apu4",
			"QEMU Standard PC (i440FX + PIIX, 1996)", "QEMU Standard PC (Q35 + ICH9, 2009)",
			"VMware, Inc. VMware Virtual Platform", "innotek GmbH VirtualBox",
		), "pc-engines-apu2", "pc-engines-apu3", "pc-engines-apu4",
			"qemu-standard-pc-i440fx-piix-1996", "qemu-standard-pc-q35-ich9-2009",
			"vmware-inc-vmware-virtual-platform", "innotek-gmbh-virtualbox"),
	}},
	{"x86/generic", []string{"squashfs-combined.img.gz", "ext4-combined.img.gz"}, []builtinDevice{
		dv("generic", ms("PC Engines ALIX2", "QEMU Standard PC (i440FX + PIIX, 1996) (32-bit)"), "pc-engines-alix2"),
	}},
	{"x86/geode", []string{"squashfs-combined.img.gz"}, []builtinDevice{
		dv("generic", ms("PC Engines ALIX.2D2", "PC Engines ALIX.2D3"), "pc-engines-alix-2d2", "pc-engines-alix-2d3"),
	}},
	{"ipq40xx/generic", sqSysupgrade, []builtinDevice{
		dv("8dev_jalapeno", ms("8devices Jalapeno"), "8dev,jalapeno"),
		dv("asus_map-ac2200", ms("ASUS Lyra (MAP-AC2200)"), "asus,map-ac2200"),
		dv("avm_fritzbox-4040", ms("AVM FRITZ!Box 4040"), "avm,fritzbox-4040"),
		dv("avm_fritzbox-7530", ms("AVM FRITZ!Box 7530"), "avm,fritzbox-7530"),
		dv("compex_wpj428", ms("Compex WPJ428"), "compex,wpj428"),
		dv("engenius_eap1300", ms("EnGenius EAP1300"), "engenius,eap1300"),
		dv("glinet_gl-b1300", ms("GL.iNet GL-B1300"), "glinet,gl-b1300"),
		dv("linksys_ea6350v3", ms("Linksys EA6350v3"), "linksys,ea6350v3"),
		dv("linksys_ea8300", ms("Linksys EA8300 (Dallas)"), "linksys,ea8300"),
		dv("linksys_mr8300", ms("Linksys MR8300 (Dallas)"), "linksys,mr8300"),
		dv("meraki_mr33", ms("Cisco Meraki MR33"), "meraki,mr33"),
		dv("netgear_ex6100v2", ms("Netgear EX6100v2"), "netgear,ex6100v2"),
		dv("openmesh_a42", ms("OpenMesh A42"), "openmesh,a42"),
		dv("openmesh_a62", ms("OpenMesh A62"), "openmesh,a62"),
		dv("zyxel_nbg6617", ms("ZyXEL NBG6617"), "zyxel,nbg6617"),
	}},
	{"ipq40xx/mikrotik", sqSysupgrade, []builtinDevice{
		dv("mikrotik_hap-ac2", ms("MikroTik hAP ac2"), "mikrotik,hap-ac2"),
		dv("mikrotik_sxtsq-5-ac", ms("MikroTik SXTsq 5 ac (RBSXTsqG-5acD)"), "mikrotik,sxtsq-5-ac"),
	}},
	{"ipq806x/generic", sqSysupgrade, []builtinDevice{
		dv("linksys_ea8500", ms("Linksys EA8500"), "linksys,ea8500"),
		dv("netgear_r7800", ms("Netgear Nighthawk X4S R7800"), "netgear,r7800"),
		dv("tplink_c2600", ms("TP-Link Archer C2600 v1"), "tplink,c2600"),
	}},
	{"qualcommax/ipq807x", sqSysupgrade, []builtinDevice{
		dv("dynalink_dl-wrx36", ms("Dynalink DL-WRX36"), "dynalink,dl-wrx36"),
		dv("linksys_mx4200v1", ms("Linksys MX4200 v1"), "linksys,mx4200v1"),
		dv("netgear_wax218", ms("Netgear WAX218"), "netgear,wax218"),
		dv("qnap_301w", ms("QNAP 301w"), "qnap,301w"),
		dv("redmi_ax6", ms("Redmi AX6"), "redmi,ax6"),
		dv("xiaomi_ax3600", ms("Xiaomi AX3600"), "xiaomi,ax3600"),
		dv("xiaomi_ax9000", ms("Xiaomi AX9000"), "xiaomi,ax9000"),
	}},
	{"mvebu/cortexa9", sqSysupgrade, []builtinDevice{
		dv("linksys_wrt1200ac", ms("Linksys WRT1200AC"), "linksys,wrt1200ac", "linksys,caiman"),
		dv("linksys_wrt1900acs", ms("Linksys WRT1900ACS"), "linksys,wrt1900acs", "linksys,shelby"),
		dv("linksys_wrt3200acm", ms("Linksys WRT3200ACM"), "linksys,wrt3200acm", "linksys,rango"),
		dv("linksys_wrt32x", ms("Linksys WRT32X"), "linksys,wrt32x", "linksys,venom"),
	}},
	{"mvebu/cortexa9", []string{"sysupgrade.img.gz"}, []builtinDevice{
		dv("cznic_turris-omnia", ms("Turris Omnia"), "cznic,turris-omnia"),
	}},
	{"mvebu/cortexa9", []string{"squashfs-sdcard.img.gz"}, []builtinDevice{
		dv("solidrun_clearfog-base-a1", ms("SolidRun Clearfog Base A1"), "solidrun,clearfog-base-a1"),
	}},
	{"mvebu/cortexa53", []string{"squashfs-sdcard.img.gz"}, []builtinDevice{
		dv("globalscale_espressobin", ms("Globalscale Marvell ESPRESSOBin Board"), "globalscale,espressobin"),
	}},
	{"bcm27xx/bcm2708", rpiImages, []builtinDevice{
		dv("rpi", ms("Raspberry Pi Model B Rev 2", "Raspberry Pi Model B Plus Rev 1.2", "Raspberry Pi Zero W Rev 1.1"),
			"raspberrypi,model-b", "raspberrypi,model-b-plus", "raspberrypi,model-zero-w"),
	}},
	{"bcm27xx/bcm2709", rpiImages, []builtinDevice{
		dv("rpi-2", ms("Raspberry Pi 2 Model B Rev 1.1"), "raspberrypi,2-model-b"),
	}},
	{"bcm27xx/bcm2710", rpiImages, []builtinDevice{
		dv("rpi-3", ms("Raspberry Pi 3 Model B Rev 1.2", "Raspberry Pi 3 Model B Plus Rev 1.3"),
			"raspberrypi,3-model-b", "raspberrypi,3-model-b-plus"),
	}},
	{"bcm27xx/bcm2711", rpiImages, []builtinDevice{
		dv("rpi-4", ms("Raspberry Pi 4 Model B Rev 1.1", "Raspberry Pi 4 Model B Rev 1.2",
			"Raspberry Pi 4 Model B Rev 1.4", "Raspberry Pi Compute Module 4 Rev 1.0"),
			"raspberrypi,4-model-b", "raspberrypi,4-compute-module"),
	}},
	{"bcm27xx/bcm2712", rpiImages, []builtinDevice{
		dv("rpi-5", ms("Raspberry Pi 5 Model B Rev 1.0"), "raspberrypi,5-model-b"),
	}},
	{"realtek/rtl838x", sqSysupgrade, []builtinDevice{
		dv("d-link_dgs-1210-10p", ms("D-Link DGS-1210-10P"), "d-link,dgs-1210-10p"),
		dv("hpe_1920-8g", ms("HPE 1920-8G (JG920A)"), "hpe,1920-8g"),
		dv("netgear_gs108t-v3", ms("NETGEAR GS108T v3"), "netgear,gs108t-v3"),
		dv("netgear_gs110tpp-v1", ms("NETGEAR GS110TPP v1"), "netgear,gs110tpp-v1"),
		dv("zyxel_gs1900-10hp", ms("ZyXEL GS1900-10HP"), "zyxel,gs1900-10hp"),
		dv("zyxel_gs1900-8hp-v1", ms("ZyXEL GS1900-8HP v1"), "zyxel,gs1900-8hp-v1"),
		dv("zyxel_gs1900-8hp-v2", ms("ZyXEL GS1900-8HP v2"), "zyxel,gs1900-8hp-v2"),
	}},
	{"realtek/rtl839x", sqSysupgrade, []builtinDevice{
		dv("zyxel_gs1900-48", ms("ZyXEL GS1900-48"), "zyxel,gs1900-48"),
	}},
	{"realtek/rtl930x", sqSysupgrade, []builtinDevice{
		dv("zyxel_xgs1250-12", ms("Zyxel XGS1250-12"), "zyxel,xgs1250-12"),
	}},
	// Octeon sysupgrade images are tarballs; older releases used the
	// board names "erlite" and "er" from the SoC's system type.
	{"octeon/generic", []string{"squashfs-sysupgrade.tar"}, []builtinDevice{
		dv("itus_shield-router", ms("Itus Networks Shield Router"), "itus,shield-router"),
		dv("ubnt_edgerouter", ms("Ubiquiti EdgeRouter"), "ubnt,edgerouter", "er"),
		dv("ubnt_edgerouter-lite", ms("Ubiquiti EdgeRouter Lite"), "ubnt,edgerouter-lite", "erlite"),
	}},
	{"mpc85xx/p1010", sqSysupgrade, []builtinDevice{
		dv("sophos_red-15w-rev1", ms("Sophos RED 15w Rev.1"), "sophos,red-15w-rev1"),
		dv("tplink_tl-wdr4900-v1", ms("TP-Link TL-WDR4900 v1"), "tplink,tl-wdr4900-v1"),
	}},
	{"mpc85xx/p1020", sqSysupgrade, []builtinDevice{
		dv("aerohive_hiveap-330", ms("Aerohive HiveAP-330"), "aerohive,hiveap-330"),
		dv("enterasys_ws-ap3710i", ms("Enterasys WS-AP3710i"), "enterasys,ws-ap3710i"),
		dv("ocedo_panda", ms("OCEDO Panda"), "ocedo,panda"),
	}},
}

// builtinEntries expands the builtin table into entries keyed by image type.
func builtinEntries() map[string]Entry {
	out := map[string]Entry{}
	for _, g := range builtin {
		prefix := strings.ReplaceAll(g.target, "/", "-") + "-"
		for _, dev := range g.devices {
			for _, suf := range g.suffixes {
				typ := prefix + dev.profile + "-" + suf
				if _, dup := out[typ]; dup {
					panic("imagemap: built-in table lists " + typ + " twice")
				}
				label := dev.models[0]
				if len(dev.models) > 1 || dev.profile == "generic" {
					label = dev.profile
				}
				out[typ] = Entry{
					Label:      label + " (" + g.target + ", " + strings.TrimSuffix(suf, ".gz") + ")",
					Boards:     dev.models,
					BoardNames: dev.names,
					Target:     g.target,
				}
			}
		}
	}
	return out
}

var openWrt = sync.OnceValue(func() *Map {
	m, err := New(builtinEntries())
	if err != nil {
		panic(err) // the table is tested; see TestOpenWrtEntriesWellFormed
	}
	return m
})

// OpenWrt returns the built-in map of common OpenWrt devices across the
// ath79, ar71xx, ramips, mediatek, x86, ipq40xx, ipq806x, qualcommax
// (ipq807x), mvebu, bcm27xx, realtek, octeon and mpc85xx targets. The same
// immutable *Map is returned on every call; use Merge or With to add
// entries. It is a starting point, not an exhaustive list: import OpenWrt's
// profiles.json (ImportProfiles) for the full device list of a release.
func OpenWrt() *Map { return openWrt() }
