"""Reading exports: formats, encodings, text/id column detection, clear errors."""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.tables import ExportFileError, read_export

ROWS = [("A001", "我家宽带断网三天了，客服一直不处理"), ("A002", "快递丢件，要求赔偿")]


def csv_bytes(encoding: str, header: str = "工单编号,投诉内容") -> bytes:
    body = header + "\n" + "\n".join(f"{i},{t}" for i, t in ROWS) + "\n"
    return body.encode(encoding)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_csv_encodings(encoding: str) -> None:
    records = read_export(csv_bytes(encoding), "export.csv")
    assert records.table.column("text").to_pylist() == [t for _, t in ROWS]
    assert records.table.column("id").to_pylist() == ["A001", "A002"]
    assert records.text_column == "投诉内容"
    assert records.id_column == "工单编号"
    expected = {"gbk": "gb18030", "utf-8-sig": "utf-8-sig"}.get(encoding, encoding)
    assert records.encoding == expected


def test_csv_keeps_leading_zeros_and_multiline_cells() -> None:
    data = 'id,text\n00123,"第一行\n第二行"\n'.encode()
    records = read_export(data, "x.csv")
    assert records.table.column("id").to_pylist() == ["00123"]
    assert records.table.column("text").to_pylist() == ["第一行\n第二行"]


def test_undecodable_bytes() -> None:
    with pytest.raises(ExportFileError) as info:
        read_export(b"text\n\x80\x80 abc\n", "x.csv")
    assert info.value.code == "undecodable"


def test_unsupported_extension() -> None:
    with pytest.raises(ExportFileError, match=r"unsupported file type '\.docx'"):
        read_export(b"abc", "complaints.docx")


def test_empty_file() -> None:
    with pytest.raises(ExportFileError, match="empty"):
        read_export(b"", "x.csv")


def test_no_text_column_lists_columns() -> None:
    with pytest.raises(ExportFileError) as info:
        read_export("编号,日期\n1,2026\n".encode(), "x.csv")
    assert info.value.code == "no_text_column"
    assert "编号, 日期" in info.value.message


def test_explicit_text_column() -> None:
    records = read_export("编号,留言板\n1,网络太慢了\n".encode(), "x.csv", text_column="留言板")
    assert records.table.column("text").to_pylist() == ["网络太慢了"]
    with pytest.raises(ExportFileError, match="no column 'nope'"):
        read_export("编号,留言板\n1,网络太慢了\n".encode(), "x.csv", text_column="nope")


def test_xlsx_all_sheets_and_one_sheet() -> None:
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        pd.DataFrame({"内容": ["投诉一", "投诉二"]}).to_excel(
            writer, sheet_name="一月", index=False
        )
        pd.DataFrame({"内容": ["投诉三"]}).to_excel(writer, sheet_name="二月", index=False)
    data = buffer.getvalue()
    records = read_export(data, "x.xlsx")
    assert records.table.column("text").to_pylist() == ["投诉一", "投诉二", "投诉三"]
    assert records.table.column("source_sheet").to_pylist() == ["一月", "一月", "二月"]
    assert records.table.column("source_row").to_pylist() == [0, 1, 2]
    only = read_export(data, "x.xlsx", sheet="二月")
    assert only.table.column("text").to_pylist() == ["投诉三"]
    with pytest.raises(ExportFileError, match="sheet '三月' not found"):
        read_export(data, "x.xlsx", sheet="三月")


def test_corrupt_xlsx() -> None:
    with pytest.raises(ExportFileError) as info:
        read_export(b"PK\x03\x04 this is not really a zip", "x.xlsx")
    assert info.value.code == "corrupt_file"


def test_jsonl_with_numbers_and_bad_line() -> None:
    lines = [json.dumps({"id": 7, "content": "停电一整天"}, ensure_ascii=False), ""]
    records = read_export("\n".join(lines).encode(), "x.jsonl")
    assert records.table.column("id").to_pylist() == ["7"]
    with pytest.raises(ExportFileError, match="malformed JSONL at line 2"):
        read_export(b'{"text": "a"}\n{"text": ', "x.jsonl")


def test_parquet_and_corrupt_parquet() -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["账单多扣费"], "ticket_id": [42]}), sink)
    records = read_export(sink.getvalue(), "x.parquet")
    assert records.table.column("text").to_pylist() == ["账单多扣费"]
    assert records.table.column("id").to_pylist() == ["42"]
    with pytest.raises(ExportFileError) as info:
        read_export(b"PAR1garbage", "x.parquet")
    assert info.value.code == "corrupt_file"
