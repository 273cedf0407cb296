<?php
// Digistore24 IPN receiver, as in Digistore24's sample: it checks sha_sign
// with the passphrase, then acts on the event and answers "OK". The edge
// checked sender, signature and replays before this script runs; the
// script itself is unchanged.
require __DIR__ . '/_store.php';

// The sample has the passphrase as a constant; here the server passes it
// (php_fastcgi { env DIGISTORE24_PASSPHRASE ... }), so the example runs as it is.
define('SHA_PASSPHRASE', getenv('DIGISTORE24_PASSPHRASE') ?: 'YOUR SHA PASSPHRASE');

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

header('Content-Type: text/plain');
$received_signature = isset($_POST['sha_sign']) ? $_POST['sha_sign'] : (isset($_POST['SHASIGN']) ? $_POST['SHASIGN'] : '');
$expected_signature = digistore_signature(SHA_PASSPHRASE, $_POST);
if ($received_signature !== $expected_signature) {
    legacy_record('digistore24_ipn', array('order_id' => isset($_POST['order_id']) ? $_POST['order_id'] : '', 'sha_ok' => false));
    die("ERROR: invalid sha signature");
}

$event = isset($_POST['event']) ? $_POST['event'] : '';
legacy_record('digistore24_ipn', array(
    'event'    => $event,
    'order_id' => isset($_POST['order_id']) ? $_POST['order_id'] : '',
    'name'     => trim((isset($_POST['address_first_name']) ? $_POST['address_first_name'] : '') . ' ' . (isset($_POST['address_last_name']) ? $_POST['address_last_name'] : '')),
    'product'  => isset($_POST['product_name']) ? $_POST['product_name'] : '',
    'sha_ok'   => true,
));
// Act on the event here (on_payment, on_refund, on_chargeback,
// on_payment_missed, connection_test, ...); Digistore24 expects "OK".
die("OK");
