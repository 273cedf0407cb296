<?php
// AffiliCon ITNS receiver, as in AffiliCon's sample: it trusts $_POST and
// welcomes the buyer. The edge checked method, sender, signature, age and
// replays before this script runs; the script itself is unchanged.
require __DIR__ . '/_store.php';

// With prefix "c" (ClickBank-compatible) every field name carries the prefix.
$p = isset($_POST['ctransaction']) ? 'c' : '';
$field = function ($name) use ($p) {
    return isset($_POST[$p . $name]) ? $_POST[$p . $name] : '';
};

$empfaenger = $field('custemail');
$betreff = 'Danke!';
$nachricht = 'Hallo ' . $field('custfullname') . ', danke, dass Sie mein Produkt gekauft haben!';

legacy_record('itns', array(
    'transaction' => $field('transaction'),
    'receipt'     => $field('tranreceipt'),
    'prodid'      => $field('prodid'),
    'email'       => $empfaenger,
    'name'        => $field('custfullname'),
    'verify'      => $field('verify'),
));
// mail($empfaenger, $betreff, $nachricht, 'From: test@test.de');
header('Content-Type: text/plain');
echo "OK\n";
