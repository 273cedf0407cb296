<?php
// Digistore24 cross-check. Reads {"secret", "mode", "items": [...]} on stdin
// and prints a JSON list, one entry per item:
//
//   sign    items are lists of [name, value]; each entry is the signature
//           of those fields
//   verify  items are form bodies; each entry tells whether the sha_sign
//           (or SHASIGN) in it is the signature of the other fields
//   decode  items are strings; each entry is html_entity_decode of it
//
// The fields are the flat pairs of the body, each by its full name
// ("a[b]"): $_POST would nest array fields, which the sample's
// html_entity_decode cannot take.
require __DIR__ . '/itns_lib.php'; // readJob

// Digistore24's published PHP sample, as published.
function digistore_signature($sha_passphrase, $parameters)
{
    unset($parameters['sha_sign']);
    unset($parameters['SHASIGN']);
    $keys = array_keys($parameters);
    sort($keys);
    $sha_string = "";
    foreach ($keys as $key) {
        $value = html_entity_decode($parameters[$key]);
        $is_empty = !isset($value) || $value === "" || $value === false;
        if ($is_empty) {
            continue;
        }
        $sha_string .= "$key=$value$sha_passphrase";
    }
    return strtoupper(hash("sha512", $sha_string));
}

function flatPairs($body) {
    $params = array();
    foreach (explode('&', $body) as $seg) {
        if ($seg === '') {
            continue;
        }
        $kv = explode('=', $seg, 2);
        $params[urldecode($kv[0])] = isset($kv[1]) ? urldecode($kv[1]) : '';
    }
    return $params;
}

$job = readJob();
$out = array();
foreach ($job['items'] as $item) {
    switch ($job['mode']) {
    case 'sign':
        $params = array();
        foreach ($item as $pair) {
            $params[$pair[0]] = $pair[1];
        }
        $out[] = digistore_signature($job['secret'], $params);
        break;
    case 'verify':
        $params = flatPairs($item);
        $got = isset($params['sha_sign']) ? $params['sha_sign'] : (isset($params['SHASIGN']) ? $params['SHASIGN'] : '');
        $out[] = $got === digistore_signature($job['secret'], $params);
        break;
    case 'decode':
        $out[] = bin2hex(html_entity_decode($item));
        break;
    }
}
echo json_encode($out);
