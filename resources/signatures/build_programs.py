"""Build `programs.tsv` from the curated lists below and the human-mouse ortholog table.

Run from the repository root (needs the shared reference folder beside the checkout):

    .venv/bin/python resources/signatures/build_programs.py [ORTHOLOGS_TSV]

ORTHOLOGS_TSV: path to signature_orthologs_human_mouse.tsv (default: DEFAULT_ORTHOLOGS below).

Mouse symbols: the `mouse_final` column of the ortholog table (Ensembl BioMart + HGNC HCOP,
one rule per gene, manual overrides flagged) when the human gene is in it; otherwise the curated
mouse symbol in CURATED_MOUSE below (MGI nomenclature). A gene with neither has no mouse symbol
and is listed as such in the notes column (e.g. IFI6, GNLY, KLRF1).
This script is the provenance of programs.tsv; the pipeline reads only the TSV.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ORTHOLOGS = HERE.parents[2] / "shared/reference/signature_orthologs_human_mouse.tsv"

SCGATE = "scGate (Andreatta et al. 2022 Bioinformatics) human CD8_TIL/PanImmune models"
PROJECTILS = "ProjecTILs (Andreatta et al. 2021 Nat Commun) case study Detecting_Tpex"
ZHENG = "Zheng et al. 2021 Science (pan-cancer T-cell atlas, GSE156728)"
SADE = "Sade-Feldman et al. 2018 Cell (GSE120575)"
HUDSON = "Hudson et al. 2019 Immunity (CX3CR1+ TIM-3+ transitory Tex)"
MOUSE_TPEX = (
    "Utzschneider 2016; Siddiqui 2019; Miller 2019; Tsui 2022 (mouse Tpex/Tex-term definitions)"
)
TIROSH = "Tirosh et al. 2016 Science G1/S + G2/M lists (as scanpy's regev_lab_cell_cycle_genes)"
MSIGDB = "MSigDB HALLMARK_INTERFERON_ALPHA_RESPONSE"
LPO = "texflow curation from Ma 2021 Cell Metab, Xu 2021 Immunity, Drijvers 2021 CIR, Tian 2024"

# program -> (up genes, down genes, source, version, notes)
PROGRAMS: dict[str, tuple[list[str], list[str], str, str, str]] = {
    # --- identity -------------------------------------------------------------------------
    "exhausted_gate": (
        "TOX PDCD1 LAG3 TIGIT HAVCR2".split(),
        [],
        SCGATE,
        "scGate models (master table, CD8_TIL)",
        "shared by Tpex and Tex-term: a gate, not a discriminator",
    ),
    "tpex": (
        "TCF7 SLAMF6 CXCR5 ID3 SELL CCR7 IL7R LEF1 XCL1 XCL2 GNG4 CD200 TNFRSF4".split(),
        "HAVCR2 GZMB PRF1 NKG7 GZMA CCL5".split(),
        f"{SCGATE}; {PROJECTILS}; {ZHENG} CD8.c14.Tex.TCF7; {MOUSE_TPEX}",
        "texflow core panel v1 (gene_programs.md [P]); negatives from ProjecTILs Detecting_Tpex",
        "SELL/CCR7/LEF1/IL7R are shared with naive-like cells: read together with exhausted_gate",
    ),
    "tex_term": (
        "HAVCR2 ENTPD1 CD38 LAYN CXCL13 TNFRSF9 GZMB PRF1 CTLA4 CD101 BATF PTPN6".split(),
        "TCF7 SELL CCR7 IL7R LEF1 SLAMF6".split(),
        f"{SCGATE} CD8_TEX; {ZHENG} CD8.c12.Tex.CXCL13; {SADE} CD8_B; {MOUSE_TPEX}",
        "texflow core panel v1 (gene_programs.md [P]); "
        "negatives = Tpex/naive markers lost in Tex-term",
        "CXCL13 and LAYN are weak in mouse CD8 T cells",
    ),
    "tex_int": (
        "CX3CR1 GZMB KLRG1 TBX21 ZEB2 S1PR5 KLF2 GZMA".split(),
        "TCF7 SELL CD101".split(),
        f"{HUDSON}; Zander et al. 2019 Immunity; Beltra et al. 2020 Immunity",
        "texflow v1: CX3CR1 GZMB KLRG1 from Hudson 2019 [V]; TBX21 ZEB2 S1PR5 KLF2 and CD101- "
        "from Zander 2019 / Beltra 2020 [P, not re-read here]",
        "effector-like; overlaps TEMRA/effector cells, so it only counts inside exhausted_gate",
    ),
    "naive_like": (
        "LEF1 CCR7 TCF7 SELL".split(),
        "PDCD1 TOX HAVCR2 GZMB GZMK NKG7".split(),
        SCGATE,
        "scGate naive (up) [V]; negatives texflow v1 [P]",
        "negatives separate naive-like from Tpex, which shares the positive markers",
    ),
    "effector_memory": (
        "GZMK CXCR3 EOMES CCL5".split(),
        "CCR7 SELL HAVCR2 ENTPD1".split(),
        f"{SCGATE}; {ZHENG} CD8.c05.Tem.GZMK",
        "scGate GZMK CXCR3 [V]; EOMES CCL5 and negatives texflow v1 [P]",
        "",
    ),
    "cytotoxic": (
        "GZMB GZMA PRF1 NKG7".split(),
        [],
        SCGATE,
        "scGate cytotoxic [V]",
        "GNLY left out: no mouse ortholog",
    ),
    "trm": (
        "ZNF683 ITGAE CXCR6 CD69".split(),
        "KLF2 S1PR1 SELL".split(),
        SCGATE,
        "scGate TRM ZNF683 ITGAE CXCR6 [V]; CD69 and negatives texflow v1 [P]",
        "mouse ZNF683 = Zfp683 (Hobit)",
    ),
    "mait": (
        "TRAV1-2 SLC4A10 KLRB1 ZBTB16 RORC".split(),
        [],
        SCGATE,
        "scGate MAIT TRAV1-2 SLC4A10 KLRB1 [V]; ZBTB16 RORC texflow v1 [P]",
        "mouse MAIT use Trav1 (TRAV1-TRAJ33); KLRB1 maps to the Klrb1 family",
    ),
    # --- axes (flags, never identity) -----------------------------------------------------
    "isg": (
        "ISG15 IFI6 IFI44L MX1 IFIT1 IFIT3 RSAD2".split(),
        [],
        f"ProjecTILs IFN axis (ISG15 IFI6 IFI44L MX1); {ZHENG} CD8.c15.ISG.IFIT1",
        "texflow v1: union of the two [V] lists",
        "IFI6 has no mouse ortholog; C57BL/6 carries a defective Mx1 allele",
    ),
    "cycling": (
        "MKI67 TOP2A CDK1 NUSAP1 UBE2C BIRC5 TPX2 CENPF CCNB2 CDC20 AURKB "
        "PCNA TYMS MCM2 MCM5 RRM2 FEN1 GINS2 UHRF1 CLSPN".split(),
        [],
        TIROSH,
        "texflow v1: 11 G2/M + 9 G1/S genes of Tirosh 2016 with one-to-one mouse orthologs",
        "",
    ),
    # --- tested programs --------------------------------------------------------------------
    "ifn_i_core": (
        "ISG15 IFI6 IFI44L IFI44 IFIT1 IFIT2 IFIT3 MX1 MX2 OAS1 OAS2 OAS3 OASL RSAD2 IRF7 STAT1 "
        "STAT2 IRF9 ISG20 XAF1 BST2 LY6E IFITM1 IFI35 USP18 HERC6 EPSTI1 CMPK2".split(),
        [],
        f"texflow core ISG program for T cells, drawn from {MSIGDB}, {ZHENG} CD8.c15 "
        "and ProjecTILs",
        "texflow v1 (28 genes, gene_programs.md [P])",
        "mouse: IFI6 none; OAS1 -> Oas1a;Oas1g; OASL -> Oasl1;Oasl2; Mx1 defective in C57BL/6",
    ),
    "ifn_alpha_hallmark": (
        "MX1 ISG15 OAS1 IFIT3 IFI44 IFI35 IRF7 RSAD2 IFI44L IFITM1 IFI27 IRF9 OASL EIF2AK2 IFIT2 "
        "CXCL10 TAP1 SP110 DDX60 UBE2L6 USP18 PSMB8 IFIH1 BST2 LGALS3BP ADAR ISG20 GBP2 IRF1 "
        "PLSCR1 "
        "PSMB9 HERC6 SAMD9 CMPK2 IFITM3 RTP4 STAT2 SAMD9L LY6E IFITM2 HELZ2 CXCL11 TRIM21 PARP14 "
        "TRIM26 PARP12 NMI RNF31 HLA-C CASP1 TRIM14 TDRD7 DHX58 PARP9 PNPT1 TRIM25 PSME1 WARS1 "
        "EPSTI1 UBA7 PSME2 B2M TRIM5 C1S LAP3 LAMP3 GBP4 NCOA7 TMEM140 CD74 GMPR PSMA3 PROCR IL7 "
        "IFI30 IRF2 CSF1 IL15 CNP TENT5A IL4R CMTR1 CD47 LPAR6 MOV10 CASP8 TXNIP SLC25A28 SELL "
        "TRAFD1 BATF2 RIPK2 CCRL2 NUB1 OGFR MVB12A ELF1".split(),
        [],
        MSIGDB,
        "MSigDB v7.5.1 (97 genes)",
        "secondary IFN score in T cells: holds state genes (SELL IL7 TXNIP B2M HLA-C CD74 CD47 "
        "IL15 IL4R CSF1); old symbols WARS FAM46A FTSJD2 resolved through aliases.tsv",
    ),
    "lpo_drivers": (
        "ACSL4 LPCAT3 ALOX5 ALOX12 ALOX15 ALOX15B ALOXE3 POR CYBB CD36 TFRC NCOA4 SAT1 PHKG2 "
        "IREB2 HMOX1".split(),
        [],
        LPO,
        "texflow LPO v1 (gene_programs.md [P])",
        "signed LPO = drivers - suppressors is derived, not a list; ALOX*, CD36, CYBB sparse in T "
        "cells; TFRC and SAT1 also follow activation",
    ),
    "lpo_suppressors": (
        "GPX4 SLC7A11 SLC3A2 AIFM2 GCH1 DHODH FTH1 FTL NFE2L2 TXNRD1 GCLC GCLM GSS SLC40A1 SCD "
        "ACSL3".split(),
        [],
        LPO,
        "texflow LPO v1 (gene_programs.md [P])",
        "signed LPO = drivers - suppressors is derived, not a list",
    ),
    # --- gating -----------------------------------------------------------------------------
    "cd8_t": (
        "CD8A CD8B CD3E CD3D".split(),
        ["CD4"],
        SCGATE,
        "scGate CD8T model [V]",
        "",
    ),
    "cd4_t": (
        "CD4 CD40LG CD3E CD3D".split(),
        "CD8A CD8B".split(),
        SCGATE,
        "scGate CD4T model (CD4 CD40LG; -CD8A -CD8B) [V]; CD3E CD3D added as in cd8_t",
        "",
    ),
    "treg": (
        "FOXP3 IL2RA CTLA4 IKZF2 RTKN2".split(),
        "CD8A CD8B".split(),
        f"{SCGATE}; {ZHENG} CD4.c18.Treg.RTKN2",
        "texflow v1 [P]",
        "CTLA4 is also high in Tex-term: treg only for gating CD4 T cells",
    ),
    "nk": (
        "NCAM1 KLRF1 NKG7 GNLY NCR1 KLRD1".split(),
        "CD3E CD3D".split(),
        SCGATE,
        "scGate NK (NCAM1 KLRF1 NKG7 GNLY; -CD3E -CD3D) [V]; NCR1 KLRD1 texflow v1 [P]",
        "KLRF1 and GNLY have no mouse ortholog: NCR1 (NKp46) carries the mouse gate",
    ),
    "myeloid": (
        "LYZ CD14 CD68 CSF1R AIF1 CST3".split(),
        "CD3E CD3D".split(),
        SCGATE,
        "scGate Myeloid/MoMacDC (LYZ CD14 CD68 ...) [V]; CSF1R AIF1 CST3 texflow v1 [P]",
        "LYZ -> Lyz1;Lyz2 in mouse",
    ),
    "b_cell": (
        "MS4A1 CD79A CD79B CD19 PAX5 BANK1".split(),
        "CD3E CD3D".split(),
        SCGATE,
        "scGate Bcell (MS4A1 CD79A ...) [V]; texflow v1 [P]",
        "",
    ),
}

# Mouse symbols of genes that the shared ortholog table does not cover (MGI nomenclature).
# Empty string = no mouse ortholog.
CURATED_MOUSE = {
    "CD8A": "Cd8a",
    "CD8B": "Cd8b1",
    "CD3E": "Cd3e",
    "CD3D": "Cd3d",
    "CD4": "Cd4",
    "CD40LG": "Cd40lg",
    "FOXP3": "Foxp3",
    "IL2RA": "Il2ra",
    "IKZF2": "Ikzf2",
    "RTKN2": "Rtkn2",
    "NCAM1": "Ncam1",
    "KLRF1": "",
    "GNLY": "",
    "NCR1": "Ncr1",
    "KLRD1": "Klrd1",
    "LYZ": "Lyz1;Lyz2",
    "CD14": "Cd14",
    "CD68": "Cd68",
    "CSF1R": "Csf1r",
    "AIF1": "Aif1",
    "CST3": "Cst3",
    "MS4A1": "Ms4a1",
    "CD79A": "Cd79a",
    "CD79B": "Cd79b",
    "CD19": "Cd19",
    "PAX5": "Pax5",
    "BANK1": "Bank1",
    "CCL5": "Ccl5",
    "CX3CR1": "Cx3cr1",
    "KLRG1": "Klrg1",
    "TBX21": "Tbx21",
    "ZEB2": "Zeb2",
    "S1PR5": "S1pr5",
    "KLF2": "Klf2",
    "GZMK": "Gzmk",
    "CXCR3": "Cxcr3",
    "EOMES": "Eomes",
    "ZNF683": "Zfp683",
    "ITGAE": "Itgae",
    "CXCR6": "Cxcr6",
    "CD69": "Cd69",
    "S1PR1": "S1pr1",
    "TRAV1-2": "Trav1",
    "SLC4A10": "Slc4a10",
    "KLRB1": "Klrb1;Klrb1c",
    "ZBTB16": "Zbtb16",
    "RORC": "Rorc",
    "MKI67": "Mki67",
    "TOP2A": "Top2a",
    "CDK1": "Cdk1",
    "NUSAP1": "Nusap1",
    "UBE2C": "Ube2c",
    "BIRC5": "Birc5",
    "TPX2": "Tpx2",
    "CENPF": "Cenpf",
    "CCNB2": "Ccnb2",
    "CDC20": "Cdc20",
    "AURKB": "Aurkb",
    "PCNA": "Pcna",
    "TYMS": "Tyms",
    "MCM2": "Mcm2",
    "MCM5": "Mcm5",
    "RRM2": "Rrm2",
    "FEN1": "Fen1",
    "GINS2": "Gins2",
    "UHRF1": "Uhrf1",
    "CLSPN": "Clspn",
}
CURATED_NOTES = {
    "KLRF1": "no mouse ortholog (rodents lack NKp80)",
    "GNLY": "no mouse ortholog (granulysin absent in mouse)",
    "CD8B": "mouse Cd8b1",
    "TRAV1-2": "mouse Trav1 (MAIT TCR alpha)",
    "KLRB1": "one-to-many: Klrb1 family; Klrb1c = NK1.1",
    "LYZ": "one-to-many: Lyz1 and Lyz2",
    "ZNF683": "mouse Zfp683 (Hobit)",
}


def read_orthologs(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["human"]: row for row in csv.DictReader(handle, delimiter="\t")}


def build(orthologs: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    rows = []
    for program, (up, down, source, version, notes) in PROGRAMS.items():
        for direction, genes in (("up", up), ("down", down)):
            for gene in genes:
                if gene in orthologs:
                    entry = orthologs[gene]
                    mouse = entry["mouse_final"]
                    rule = f"ortholog table: {entry['rule']}" + (
                        ", manual override" if entry["override"] == "True" else ""
                    )
                elif gene in CURATED_MOUSE:
                    mouse = CURATED_MOUSE[gene]
                    rule = "curated (MGI)" + (
                        f": {CURATED_NOTES[gene]}" if gene in CURATED_NOTES else ""
                    )
                else:
                    raise SystemExit(f"{program}: {gene} has no mouse symbol rule")
                if not mouse:
                    rule += "; no mouse ortholog"
                gene_note = "; ".join(part for part in (f"mouse: {rule}", notes) if part)
                rows.append(
                    {
                        "program": program,
                        "direction": direction,
                        "human": gene,
                        "mouse": mouse,
                        "source": source,
                        "version": version,
                        "notes": gene_note,
                    }
                )
    return rows


def main() -> None:
    orthologs = read_orthologs(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ORTHOLOGS)
    rows = build(orthologs)
    with open(HERE / "programs.tsv", "w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows for {len(PROGRAMS)} programs")


if __name__ == "__main__":
    main()
