<?php
// ClickBank INS 6.0+ cross-check. Reads {"secret", "mode", "items": [...]}
// on stdin and prints a JSON list, one entry per item:
//
//   decrypt        items are posted bodies; each entry is what the
//                  published sample (ipnVerification6, below) decodes: the
//                  notification re-encoded as JSON, or null
//   decrypt_data   the same with openssl_decrypt given the base64 text
//                  itself (options 0: it decodes it), as some copies do
//   decrypt_mcrypt the same without padding removal (the mcrypt-era sample:
//                  it decrypted raw blocks and left the padding to trim)
//   encrypt        items are notification texts; each entry is the body a
//                  ClickBank sender would post (random IV)
require __DIR__ . '/itns_lib.php'; // readJob

// ClickBank's published PHP sample (its ipnVerification, renamed beside the
// form sample's), with the raw body and the secret key as
// arguments instead of php://input and a constant; $options selects the
// variants above (the sample itself: OPENSSL_RAW_DATA).
function ipnVerification6($body, $secretKey, $options, $raw) {
    // get JSON from raw body...
    $message = json_decode($body);
    // Pull out the encrypted notification and the initialization vector for
    // AES/CBC/PKCS5Padding decryption
    $encrypted = $message->{'notification'};
    $iv = $message->{'iv'};
    // decrypt the body...
    $decrypted = trim(
        openssl_decrypt($raw ? base64_decode($encrypted) : $encrypted,
            'AES-256-CBC',
            substr(sha1($secretKey), 0, 32),
            $options,
            base64_decode($iv)), "\0..\32");
    // convert the decrypted string to a JSON object...
    return json_decode($decrypted);
}

$job = readJob();
$out = array();
foreach ($job['items'] as $item) {
    switch ($job['mode']) {
    case 'decrypt':
        $order = ipnVerification6($item, $job['secret'], OPENSSL_RAW_DATA, true);
        break;
    case 'decrypt_data':
        $order = ipnVerification6($item, $job['secret'], 0, false);
        break;
    case 'decrypt_mcrypt':
        $order = ipnVerification6($item, $job['secret'], OPENSSL_RAW_DATA | OPENSSL_ZERO_PADDING, true);
        break;
    case 'encrypt':
        $iv = random_bytes(16);
        $c = openssl_encrypt($item, 'AES-256-CBC', substr(sha1($job['secret']), 0, 32), OPENSSL_RAW_DATA, $iv);
        $out[] = json_encode(array('notification' => base64_encode($c), 'iv' => base64_encode($iv)));
        continue 2;
    }
    $out[] = $order === null ? null : json_encode($order, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION);
}
echo json_encode($out);
