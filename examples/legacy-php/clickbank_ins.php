<?php
// ClickBank Instant Notification (INS 6.0 and later) receiver, as in
// ClickBank's PHP sample: it decrypts the JSON notification with the secret
// key and trusts what it reads. The edge checked sender, decryption, age and
// replays before this script runs; the script itself is unchanged.
require __DIR__ . '/_store.php';

// The sample has the secret key as a literal; here the server passes it
// (php_fastcgi { env CLICKBANK_SECRET ... }), so the example runs as it is.
$secretKey = getenv('CLICKBANK_SECRET') ?: 'YOUR SECRET KEY';

// get JSON from raw body...
$message = json_decode(file_get_contents('php://input'));

// Pull out the encrypted notification and the initialization vector for
// AES/CBC/PKCS5Padding decryption
$encrypted = $message->{'notification'};
$iv = $message->{'iv'};

// decrypt the body...
$decrypted = trim(
    openssl_decrypt(base64_decode($encrypted),
        'AES-256-CBC',
        substr(sha1($secretKey), 0, 32),
        OPENSSL_RAW_DATA,
        base64_decode($iv)), "\0..\32");

// convert the decrypted string to a JSON object...
$order = json_decode($decrypted);

header('Content-Type: text/plain');
if (!is_object($order)) {
    http_response_code(400);
    echo "ERROR\n";
    exit;
}
$billing = isset($order->customer->billing) ? $order->customer->billing : new stdClass();
legacy_record('clickbank_ins', array(
    'receipt'         => $order->receipt,
    'transactionType' => $order->transactionType,
    'role'            => isset($order->role) ? $order->role : '',
    'attemptCount'    => isset($order->attemptCount) ? $order->attemptCount : 0,
    'name'            => isset($billing->fullName) ? $billing->fullName : '',
    'email'           => isset($billing->email) ? $billing->email : '',
));
echo "OK\n";
