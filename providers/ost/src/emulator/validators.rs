//! `GET /api/v2/ethereum-address-validation?ethereum_address=…`.
//!
//! OST accepts the address with or without `0x` if it is 40 hex digits, then asks web3:
//! all lower or all upper case passes, mixed case must be the EIP-55 checksum. The answer
//! is the documented `{"success": true}`, or 400 naming `ethereum_address`.

use axum::{
    response::{IntoResponse, Response},
    Json,
};
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::api::{bad_request, unexpected};
use crate::{
    envelope::ErrorData,
    kyc::{ethereum, AddressCheck},
};

pub(crate) fn ethereum_address(params: &Map<String, Value>) -> Response {
    let mut errors = unexpected(params, &["ethereum_address"]);
    let address = params
        .get("ethereum_address")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !ethereum::is_valid(address, AddressCheck::Checksum) {
        errors.push(ErrorData::new(
            "ethereum_address",
            "is not a valid Ethereum address (40 hex digits; mixed case must be its EIP-55 checksum)",
        ));
    }
    if !errors.is_empty() {
        return bad_request("emu_invalid_ethereum_address", errors);
    }
    (StatusCode::OK, Json(json!({"success": true}))).into_response()
}
